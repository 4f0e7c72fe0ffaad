//! Why the store refuses an operation: each variant says what a client can do about it.

/// Why the store refused an operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Too many uploads are in progress.
    #[error("too many uploads in progress (limit {limit}); retry shortly")]
    Busy {
        /// The configured limit.
        limit: usize,
    },
    /// The number of stored paths reached its limit.
    #[error("the store holds its maximum of {limit} paths; delete some or raise --max-paths")]
    TooManyPaths {
        /// The configured limit.
        limit: usize,
    },
    /// Memory is full of data that cannot be moved to disk yet.
    #[error("the memory limit of {limit} bytes is reached and nothing can be moved to disk")]
    MemoryFull {
        /// The configured limit.
        limit: u64,
    },
    /// The upload grew beyond the largest accepted size.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// A newer upload or a delete of the same path replaced this upload.
    #[error("a newer upload or a delete of this path replaced this upload")]
    Superseded,
    /// An upload of the same path that arrived later is already stored or in progress.
    #[error("an upload of this path that arrived later is already stored or in progress")]
    Stale,
    /// A folder of the path is a file (stored, being uploaded, or on disk): `a/b` while `a` is a
    /// file.
    #[error("`{file}` is a file, so nothing can be stored under it as a folder; delete it first")]
    FileInTheWay {
        /// The file's path.
        file: String,
    },
    /// The path is a folder (of stored files, uploads in progress, or on disk): `a` while `a/b`
    /// exists.
    #[error("`{folder}` is a folder, so it cannot also be stored as a file; delete what is under it first")]
    FolderInTheWay {
        /// The folder's path.
        folder: String,
    },
    /// A name on the path is a symbolic link in the root folder: ldash follows none.
    #[error("`{at}` is a symbolic link in the root folder, and ldash follows no links there")]
    Link {
        /// The link's path under the root.
        at: String,
    },
    /// A name on the path is neither a regular file nor a folder in the root (a FIFO, socket, device).
    #[error("`{at}` in the root folder is neither a regular file nor a folder")]
    NotRegular {
        /// Its path under the root.
        at: String,
    },
    /// The root folder could not be read to check the path.
    #[error("the root folder could not be checked: {0}")]
    Disk(String),
}
