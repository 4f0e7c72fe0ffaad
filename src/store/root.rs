//! The root folder on disk, reached only through its descriptor and never through a symbolic link.
//!
//! Every read, write, removal and scan below the root walks the path one name at a time with
//! `openat(.., O_NOFOLLOW)` from the descriptor of the folder above, so a folder or file under the
//! root that is (or becomes) a symbolic link stops the walk: there is no window between a check and
//! the use, because the walk *is* the use. Links are refused whether they point out of the root or
//! into it (a link inside the root is not something ldash writes, and serving one would give a file
//! two names with one clock for garbage collection): simple to state, and nothing to get wrong.
//!
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` would resolve a whole path in one call, but it is
//! Linux 5.6+ only (and refused by some container seccomp profiles); writes need a `mkdirat` per
//! missing folder anyway, and walking name by name also tells which name is the link, for the
//! reason given to the client. One code path, on every Unix that rustix supports.
//!
//! The root's own path is the operator's and may itself be a link; it is opened anew for every
//! operation, so a root moved away or replaced while ldash runs makes writes fail (and be counted,
//! see `persist`) rather than land in the moved folder.
//!
//! No HTTP here: refusals are [`StoreError`]s, which the HTTP layer maps to a status.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::path::StorePath;
use super::StoreError;

/// Folder under the root that holds files being written; never served.
pub(crate) const TEMP_DIR: &str = ".ldash-tmp";

/// The root folder, by path; every operation below it is relative and follows no link.
#[derive(Debug)]
pub(crate) struct RootDir {
    path: PathBuf,
}

/// A file found under the root by [`RootDir::scan`].
#[derive(Debug)]
pub(crate) struct Found {
    /// Its store path.
    pub(crate) path: StorePath,
    /// Its metadata, from the descriptor opened without following links.
    pub(crate) meta: std::fs::Metadata,
}

/// Why a walk down the root stopped.
enum Stop {
    /// A name on the way does not exist.
    Missing(String),
    /// A name on the way is a link, a file or something else that is not a folder; or the disk
    /// failed.
    Refused(StoreError),
}

impl From<Stop> for io::Error {
    fn from(stop: Stop) -> io::Error {
        match stop {
            Stop::Missing(at) => {
                io::Error::new(io::ErrorKind::NotFound, format!("`{at}` does not exist under the root"))
            }
            Stop::Refused(err) => io::Error::other(err),
        }
    }
}

impl RootDir {
    /// The root at `path`, created if missing.
    pub(crate) fn create(path: PathBuf) -> io::Result<RootDir> {
        std::fs::create_dir_all(&path)?;
        let root = RootDir { path };
        root.open_root()?;
        Ok(root)
    }

    fn open_root(&self) -> io::Result<OwnedFd> {
        // The root's own path may be a link (the operator's choice); nothing below it may.
        Ok(rustix::fs::open(
            &self.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Opens the folders of `names` from the root, one by one, each without following a link;
    /// missing ones are created when `create`. Returns the root and every folder opened, in order.
    fn walk(&self, names: &[&str], create: bool) -> Result<Vec<OwnedFd>, Stop> {
        let root = self
            .open_root()
            .map_err(|err| Stop::Refused(disk("the root folder", &err)))?;
        let mut fds = vec![root];
        for (depth, name) in names.iter().enumerate() {
            let at = names[..=depth].join("/");
            let Some(parent) = fds.last() else {
                return Err(Stop::Refused(StoreError::Disk("no folder descriptor".into())));
            };
            let opened = match open_folder(parent.as_fd(), name) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(parent.as_fd(), *name, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => open_folder(parent.as_fd(), name),
                        Err(err) => Err(err),
                    }
                }
                other => other,
            };
            match opened {
                Ok(fd) => fds.push(fd),
                Err(Errno::NOENT) => return Err(Stop::Missing(at)),
                Err(err) => return Err(Stop::Refused(not_a_folder(parent.as_fd(), name, at, err))),
            }
        }
        Ok(fds)
    }

    /// Whether an upload of `path` could be written: every folder on the way is a folder or absent,
    /// and the name itself is a regular file or absent. Links anywhere are refused.
    pub(crate) fn probe(&self, path: &StorePath) -> Result<(), StoreError> {
        let (folders, name) = split(path);
        let fds = match self.walk(&folders, false) {
            Ok(fds) => fds,
            Err(Stop::Missing(_)) => return Ok(()),
            Err(Stop::Refused(err)) => return Err(err),
        };
        let Some(parent) = fds.last() else {
            return Ok(());
        };
        match rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(err) => Err(disk(path, &err.into())),
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => Ok(()),
                FileType::Directory => Err(StoreError::FolderInTheWay {
                    folder: path.to_string(),
                }),
                FileType::Symlink => Err(StoreError::Link { at: path.to_string() }),
                _ => Err(StoreError::NotRegular { at: path.to_string() }),
            },
        }
    }

    /// Opens the regular file at `path` for reading, following no link on the way.
    pub(crate) fn open_file(&self, path: &StorePath) -> io::Result<File> {
        let (folders, name) = split(path);
        let fds = self.walk(&folders, false)?;
        let Some(parent) = fds.last() else {
            return Err(io::Error::other("no folder descriptor"));
        };
        // NONBLOCK: a FIFO put in the file's place must not hold a thread forever (it is refused
        // below); on a regular file the flag changes nothing.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(parent.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(io::Error::other(StoreError::Link { at: path.to_string() })),
            Err(err) => return Err(err.into()),
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(StoreError::NotRegular { at: path.to_string() }));
        }
        Ok(file)
    }

    /// Writes `chunks` to `path`: into `temp_name` in the temporary folder, then renamed into place
    /// (a reader of the previous version keeps its file). Returns the new file's inode.
    pub(crate) fn write(&self, path: &StorePath, temp_name: &str, chunks: &[Bytes]) -> io::Result<u64> {
        let temps = self.walk(&[TEMP_DIR], true)?;
        let Some(temp) = temps.last() else {
            return Err(io::Error::other("no folder descriptor"));
        };
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut file = File::from(rustix::fs::openat(
            temp.as_fd(),
            temp_name,
            flags,
            Mode::from_bits_truncate(0o666),
        )?);
        let written = (|| {
            for chunk in chunks {
                file.write_all(chunk)?;
            }
            let ino = super::entry::inode(&file.metadata()?);
            let (folders, name) = split(path);
            let fds = self.walk(&folders, true)?;
            let Some(parent) = fds.last() else {
                return Err(io::Error::other("no folder descriptor"));
            };
            // renameat replaces whatever `name` is in the folder (a link is replaced, not followed)
            // and fails on a folder: the file lands in the root or not at all.
            rustix::fs::renameat(temp.as_fd(), temp_name, parent.as_fd(), name)?;
            Ok(ino)
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(temp.as_fd(), temp_name, AtFlags::empty());
        }
        written
    }

    /// Removes the regular file at `path` and the folders its removal leaves empty (never the
    /// root). A link on the way is refused; a link, folder or anything else in the file's place is
    /// left alone. Ok when there was nothing to remove.
    pub(crate) fn remove(&self, path: &StorePath) -> io::Result<()> {
        let (folders, name) = split(path);
        let fds = match self.walk(&folders, false) {
            Ok(fds) => fds,
            Err(Stop::Missing(_)) => return Ok(()),
            Err(stop) => return Err(stop.into()),
        };
        let Some(parent) = fds.last() else {
            return Ok(());
        };
        match rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Ok(()),
            Err(err) => return Err(err.into()),
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => {}
                FileType::Symlink => return Err(io::Error::other(StoreError::Link { at: path.to_string() })),
                _ => return Err(io::Error::other(StoreError::NotRegular { at: path.to_string() })),
            },
        }
        // Between the look and the unlink the name could become a link: unlinkat removes the link
        // itself, never its target, so nothing outside the root can be reached either way.
        match rustix::fs::unlinkat(parent.as_fd(), name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(err) => return Err(err.into()),
        }
        // Folders left empty, deepest first; rmdir fails on a folder that is not empty (or on a
        // link), which ends the climb.
        for depth in (0..folders.len()).rev() {
            let Some(above) = fds.get(depth) else { break };
            if rustix::fs::unlinkat(above.as_fd(), folders[depth], AtFlags::REMOVEDIR).is_err() {
                break;
            }
        }
        Ok(())
    }

    /// The regular files under the root with their store paths, skipping hidden names (and the
    /// temporary folder), links (logged) and anything that is not a file or folder. A file whose
    /// path is not a valid [`StorePath`] is not served, and a folder whose paths cannot be is not
    /// entered.
    pub(crate) fn scan(&self) -> io::Result<Vec<Found>> {
        let valid = |path: &str| StorePath::new(path).is_ok();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(folder) = pending.pop() {
            let names: Vec<&str> = if folder.is_empty() {
                Vec::new()
            } else {
                folder.split('/').collect()
            };
            let fds = match self.walk(&names, false) {
                Ok(fds) => fds,
                Err(Stop::Missing(_)) => continue,
                Err(Stop::Refused(err)) if names.is_empty() => return Err(io::Error::other(err)),
                Err(Stop::Refused(err)) => {
                    tracing::warn!(folder, %err, "not served: the folder could not be entered");
                    continue;
                }
            };
            let Some(dir_fd) = fds.last() else { continue };
            for item in rustix::fs::Dir::read_from(dir_fd.as_fd())? {
                let item = item?;
                let Ok(name) = item.file_name().to_str() else {
                    tracing::warn!(folder, "not served: a name that is not UTF-8");
                    continue;
                };
                // Hidden files (.gitignore and the like, and the temporary folder) are not content.
                if name.starts_with('.') {
                    continue;
                }
                let path = if folder.is_empty() {
                    name.to_owned()
                } else {
                    format!("{folder}/{name}")
                };
                let kind = match rustix::fs::statat(dir_fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => FileType::from_raw_mode(stat.st_mode),
                    Err(Errno::NOENT) => continue,
                    Err(err) => return Err(err.into()),
                };
                match kind {
                    FileType::Directory if valid(&format!("{path}/x")) => pending.push(path),
                    FileType::RegularFile if valid(&path) => {
                        let Ok(path) = StorePath::new(&path) else { continue };
                        // Opened without following a link (the name may have changed since the
                        // look): the metadata is that of the file served later.
                        let flags =
                            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
                        let Ok(fd) = rustix::fs::openat(dir_fd.as_fd(), name, flags, Mode::empty()) else {
                            continue;
                        };
                        let meta = File::from(fd).metadata()?;
                        if meta.is_file() {
                            found.push(Found { path, meta });
                        }
                    }
                    FileType::Symlink => {
                        tracing::warn!(
                            path,
                            "not served: a symbolic link (ldash follows no links under its root)"
                        )
                    }
                    FileType::Directory | FileType::RegularFile => {
                        tracing::warn!(path, "not served: its name is not a valid ldash path")
                    }
                    _ => {}
                }
            }
        }
        Ok(found)
    }

    /// Removes the temporary folder left by an interrupted run (a link there is removed, not
    /// followed).
    pub(crate) fn clear_temp(&self) {
        let _ = std::fs::remove_dir_all(self.path.join(TEMP_DIR));
    }

    /// The root's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn open_folder(parent: BorrowedFd<'_>, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Why `name` in `parent` could not be opened as a folder (`at` is its store path).
fn not_a_folder(parent: BorrowedFd<'_>, name: &str, at: String, err: Errno) -> StoreError {
    // The look only words the refusal: the open already failed without following anything.
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map(|stat| FileType::from_raw_mode(stat.st_mode))
    {
        Ok(FileType::Symlink) => StoreError::Link { at },
        Ok(FileType::RegularFile) => StoreError::FileInTheWay { file: at },
        Ok(FileType::Directory) | Err(_) => disk(&at, &err.into()),
        Ok(_) => StoreError::NotRegular { at },
    }
}

fn disk(at: &str, err: &io::Error) -> StoreError {
    StoreError::Disk(format!("{at}: {err}"))
}

/// The folder names on the way to a store path, and its name.
fn split(path: &StorePath) -> (Vec<&str>, &str) {
    let folders = match path.folder() {
        "" => Vec::new(),
        folder => folder.split('/').collect(),
    };
    (folders, path.name())
}
