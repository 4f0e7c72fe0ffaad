//! The root folder through real sockets: nothing is written, removed or read through a symbolic
//! link under the root (links out of it and links within it alike), also after a restart and by
//! garbage collection; and a path is never accepted as a file where a folder of the same name is
//! stored or uploading (or the reverse), since the disk cannot hold both.
//!
//! Every "nothing outside was touched" check compares the outside folder byte for byte before and
//! after. Waits are on the store's events and its write queue (`flush`), never on time.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proto, TestServer, ALL_PROTOS};
use http::Method;

/// What a folder holds, recursively, without following links: files with their bytes, folders,
/// and links with their targets.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Folder,
    Link(PathBuf),
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut nodes = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let items = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("list {}: {e}", folder.display()));
        for item in items {
            let path = item.expect("a folder item").path();
            let rel = path.strip_prefix(dir).expect("under the folder").to_path_buf();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let node = if meta.file_type().is_symlink() {
                Node::Link(std::fs::read_link(&path).expect("link target"))
            } else if meta.is_dir() {
                pending.push(path);
                Node::Folder
            } else {
                Node::File(std::fs::read(&path).expect("file bytes"))
            };
            nodes.insert(rel, node);
        }
    }
    nodes
}

/// A folder outside the root with known contents (a nested folder too).
fn outside(dir: &Path) -> PathBuf {
    let outside = dir.join("outside");
    std::fs::create_dir_all(outside.join("deeper")).expect("outside folder");
    std::fs::write(outside.join("secret.m4s"), b"bytes that live outside the root").expect("outside file");
    std::fs::write(outside.join("x.m4s"), b"an outside decoy with a stored name").expect("outside decoy");
    std::fs::write(outside.join("deeper/y.m4s"), b"deeper outside").expect("outside nested file");
    outside
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("link {} -> {}: {e}", link.display(), target.display()));
}

/// Sends `method` to `/ldash/upload/{path}` (or download, for GET) over `proto`; the status and
/// the body as text.
async fn request(server: &TestServer, proto: Proto, method: Method, path: &str, body: &[u8]) -> (u16, String) {
    let route = if method == Method::GET {
        format!("/ldash/download/{path}")
    } else {
        format!("/ldash/upload/{path}")
    };
    let client = server.client_for(proto).await;
    let mut builder = client.request(method, &route);
    if !body.is_empty() {
        builder = builder.body(body.to_vec());
    }
    let response = builder.fetch().await;
    (response.status, response.text().await)
}

/// Asserts a refusal: `status`, and a plain-text reason that says `why`.
fn assert_refused(what: &str, (status, text): &(u16, String), want: u16, why: &str) {
    assert_eq!(*status, want, "{what}: answered {status} ({text:?}), expected {want}");
    assert!(text.contains(why), "{what}: the reason {text:?} does not say {why:?}");
}

async fn get_bytes(server: &TestServer, proto: Proto, path: &str) -> (u16, Vec<u8>) {
    let response = server
        .client_for(proto)
        .await
        .get(&format!("/ldash/download/{path}"))
        .fetch()
        .await;
    let status = response.status;
    let bytes = response.bytes().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (status, bytes.to_vec())
}

// 1. Links under the root.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_replaced_by_a_link_out_of_the_root_is_never_written_removed_or_read_through() {
    let dir = tempfile::tempdir().expect("dir");
    let outside = outside(dir.path());
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let own = b"ldash's own bytes for live/x.m4s";
    assert_eq!(server.put("live/x.m4s", own.to_vec()).await, 201);
    server.store.flush().await;
    // The attack of issue 25: the stored folder is moved away and a link to a folder outside the
    // root takes its place.
    std::fs::rename(server.root.join("live"), dir.path().join("moved-live")).expect("move the folder away");
    symlink(&outside, &server.root.join("live"));
    let before = snapshot(&outside);

    for proto in ALL_PROTOS {
        let put = request(&server, proto, Method::PUT, &format!("live/new-{proto:?}.m4s"), b"new").await;
        assert_refused(&format!("PUT over {proto:?}"), &put, 403, "`live` is a symbolic link");
        let post = request(
            &server,
            proto,
            Method::POST,
            &format!("live/post-{proto:?}.m4s"),
            b"post",
        )
        .await;
        assert_refused(&format!("POST over {proto:?}"), &post, 403, "symbolic link");
        let overwrite = request(&server, proto, Method::PUT, "live/secret.m4s", b"overwrite").await;
        assert_refused(
            &format!("PUT over an outside file over {proto:?}"),
            &overwrite,
            403,
            "symbolic link",
        );
        let nested = request(&server, proto, Method::PUT, "live/deeper/z.m4s", b"nested").await;
        assert_refused(
            &format!("PUT into a folder beyond the link over {proto:?}"),
            &nested,
            403,
            "symbolic link",
        );
        let delete = request(&server, proto, Method::DELETE, "live/x.m4s", b"").await;
        assert_refused(
            &format!("DELETE of the stored path over {proto:?}"),
            &delete,
            403,
            "symbolic link",
        );
        let delete = request(&server, proto, Method::DELETE, "live/secret.m4s", b"").await;
        assert_refused(
            &format!("DELETE of an outside file over {proto:?}"),
            &delete,
            403,
            "symbolic link",
        );
        let (status, body) = get_bytes(&server, proto, "live/secret.m4s").await;
        assert_eq!(
            status,
            404,
            "GET of an outside file over {proto:?}: {:?}",
            String::from_utf8_lossy(&body)
        );
        // The stored path is ldash's, in memory: served as uploaded, never the outside decoy.
        let (status, body) = get_bytes(&server, proto, "live/x.m4s").await;
        assert_eq!(
            (status, body.as_slice()),
            (200, own.as_slice()),
            "GET of the stored path over {proto:?}"
        );
    }
    // A CMAF ingest track into the linked folder is refused before the packager starts.
    let ingest = request(&server, Proto::H1, Method::POST, "live/Streams(video.cmfv)", b"").await;
    assert_refused("a CMAF ingest POST", &ingest, 403, "symbolic link");

    server.store.flush().await;
    assert_eq!(snapshot(&outside), before, "the folder outside the root changed");
    assert!(
        server.store.get("live/x.m4s").is_some(),
        "the refused DELETE removed the stored path from memory"
    );
    assert!(
        server.store.get("live/new-H1.m4s").is_none(),
        "a refused PUT was stored anyway"
    );
    server.stop().await;
    assert_eq!(
        snapshot(&outside),
        before,
        "the folder outside the root changed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_a_link_is_neither_replaced_nor_removed_nor_served() {
    let dir = tempfile::tempdir().expect("dir");
    let outside = outside(dir.path());
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("real.m4s", b"real bytes".to_vec()).await, 201);
    server.store.flush().await;
    // A link out of the root, and one within it (refused alike: ldash serves no links).
    symlink(&outside.join("secret.m4s"), &server.root.join("linked.m4s"));
    symlink(&server.root.join("real.m4s"), &server.root.join("inside.m4s"));
    let before = snapshot(&outside);
    let root_before = snapshot(&server.root);

    for proto in ALL_PROTOS {
        for (name, target) in [("linked.m4s", "outside"), ("inside.m4s", "inside")] {
            let case = |what: &str| format!("{what} of a link to a file {target} the root, over {proto:?}");
            let put = request(&server, proto, Method::PUT, name, b"replacement").await;
            assert_refused(&case("PUT"), &put, 403, &format!("`{name}` is a symbolic link"));
            let post = request(&server, proto, Method::POST, name, b"replacement").await;
            assert_refused(&case("POST"), &post, 403, "symbolic link");
            let delete = request(&server, proto, Method::DELETE, name, b"").await;
            assert_refused(&case("DELETE"), &delete, 403, "symbolic link");
            let (status, body) = get_bytes(&server, proto, name).await;
            assert_eq!(status, 404, "{}: {:?}", case("GET"), String::from_utf8_lossy(&body));
        }
    }
    server.store.flush().await;
    assert_eq!(snapshot(&outside), before, "the folder outside the root changed");
    assert_eq!(
        snapshot(&server.root),
        root_before,
        "the root changed (links, or real.m4s)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_links_planted_in_the_root_reads_and_writes_nothing_outside() {
    let dir = tempfile::tempdir().expect("dir");
    let outside = outside(dir.path());
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("keep/seg.m4s", b"kept".to_vec()).await, 201);
    let root = server.root.clone();
    server.stop().await;

    // Planted while ldash was down: a folder, a file and the temporary folder as links out.
    symlink(&outside, &root.join("out"));
    symlink(&outside.join("secret.m4s"), &root.join("file.m4s"));
    symlink(&outside.join("deeper"), &root.join("keep/deeper"));
    std::fs::remove_dir_all(root.join(".ldash-tmp")).expect("the temporary folder of the first run");
    symlink(&outside, &root.join(".ldash-tmp"));
    let before = snapshot(&outside);

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    for path in [
        "out/secret.m4s",
        "out/x.m4s",
        "out/deeper/y.m4s",
        "file.m4s",
        "keep/deeper/y.m4s",
    ] {
        assert!(
            server.store.get(path).is_none(),
            "{path}, behind a link, was indexed at start"
        );
        for proto in ALL_PROTOS {
            let (status, body) = get_bytes(&server, proto, path).await;
            assert_eq!(
                status,
                404,
                "GET {path} over {proto:?}: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    assert_eq!(
        get_bytes(&server, Proto::H1, "keep/seg.m4s").await,
        (200, b"kept".to_vec())
    );
    // Writes go through the temporary folder: the planted link there must not take them out.
    assert_eq!(server.put("keep/next.m4s", b"written after".to_vec()).await, 201);
    server.store.flush().await;
    assert_eq!(
        std::fs::read(root.join("keep/next.m4s")).ok().as_deref(),
        Some(b"written after".as_slice()),
        "the upload after the restart is on disk under the root"
    );
    assert!(
        !std::fs::symlink_metadata(root.join(".ldash-tmp")).is_ok_and(|m| m.file_type().is_symlink()),
        "the planted temporary folder link is still there"
    );
    assert_eq!(
        server.store.stats().persist_errors,
        0,
        "the write after the restart failed"
    );
    server.stop().await;
    assert_eq!(snapshot(&outside), before, "the folder outside the root changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_out_of_memory_is_not_read_through_a_link_even_when_it_is_the_same_file() {
    let dir = tempfile::tempdir().expect("dir");
    let outside = outside(dir.path());
    // A 1-byte memory limit: every persisted file is served from disk.
    let server = TestServer::start_in(dir.path(), |c| c.max_memory = 1).await;
    let own = b"ldash's own bytes, served from disk";
    assert_eq!(server.put("live/x.m4s", own.to_vec()).await, 201);
    server.store.flush().await;
    server.store.evict_for_memory();
    assert_eq!(server.store.memory_used(), 0, "the file left memory");
    assert_eq!(get_bytes(&server, Proto::H1, "live/x.m4s").await, (200, own.to_vec()));
    // The whole folder moves out of the root and a link takes its place: the file behind the link
    // is the very file ldash wrote (same inode), but it is outside the root now.
    std::fs::rename(server.root.join("live"), outside.join("live")).expect("move the folder out");
    symlink(&outside.join("live"), &server.root.join("live"));
    let before = snapshot(&outside);
    for proto in ALL_PROTOS {
        let response = server
            .client_for(proto)
            .await
            .get("/ldash/download/live/x.m4s")
            .send()
            .await;
        // The file is opened before the status is sent: a clean 404, not a 200 with a broken body.
        let response = response.unwrap_or_else(|err| panic!("over {proto:?}: no answer: {err}"));
        let status = response.status;
        let body = response.bytes().await;
        assert_eq!(
            status, 404,
            "over {proto:?}: a file that cannot be read from the root is not found ({body:?})"
        );
    }
    assert_eq!(snapshot(&outside), before, "the folder outside the root changed");
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn garbage_collection_never_removes_through_a_link() {
    let dir = tempfile::tempdir().expect("dir");
    let outside = outside(dir.path());
    let root = dir.path().join("www");
    let ttl = Duration::from_secs(60);
    let limits = ldash::store::Limits {
        ttl: Some(ttl),
        ..ldash::store::Limits::default()
    };
    let store = ldash::store::Store::open(&root, limits).expect("store");
    for path in ["live/x.m4s", "live/deeper/y.m4s"] {
        let mut upload = store
            .begin_upload(&sp(path), ldash::store::UploadOptions::default())
            .expect("upload");
        upload
            .append(bytes::Bytes::from_static(b"ldash's own"))
            .expect("append");
        upload.finish().expect("finish");
    }
    store.flush().await;
    std::fs::rename(root.join("live"), dir.path().join("moved-live")).expect("move the folder away");
    symlink(&outside, &root.join("live"));
    let before = snapshot(&outside);

    tokio::time::advance(ttl + Duration::from_secs(1)).await;
    // The store's own maintenance may have purged them during the advance; either way, purged.
    store.collect_garbage();
    assert_eq!(
        store.stats().purged,
        2,
        "both expired paths are purged: {:?}",
        store.stats()
    );
    store.flush().await;
    assert_eq!(
        snapshot(&outside),
        before,
        "garbage collection removed or changed files outside the root"
    );
    assert!(
        std::fs::symlink_metadata(root.join("live")).is_ok_and(|m| m.file_type().is_symlink()),
        "the link itself is left alone"
    );
    // The purge gave the names back: `live/deeper` may be a file now (as far as the store goes;
    // its write is refused at the link, and the upload is dropped, whose removal is refused too).
    let again = store.begin_upload(&sp("live/deeper"), ldash::store::UploadOptions::default());
    assert!(again.is_ok(), "live/deeper after the purge: {:?}", again.err());
    drop(again);
    store.flush().await;
    assert_eq!(
        snapshot(&outside),
        before,
        "a later upload or removal changed files outside the root"
    );
}

// 2. A name is a file or a folder, never both.

/// Restarts ldash on `dir`'s root and checks that `stored` is served as it was (over every
/// protocol) and that `refused` is still refused, saying `why`.
async fn after_restart(dir: &Path, (stored, bytes): (&str, &[u8]), (refused, why): (&str, &str)) {
    let server = TestServer::start_in(dir, |_| {}).await;
    for proto in ALL_PROTOS {
        let got = get_bytes(&server, proto, stored).await;
        assert_eq!(got, (200, bytes.to_vec()), "{stored} after the restart, over {proto:?}");
    }
    let put = request(&server, Proto::H1, Method::PUT, refused, b"after the restart").await;
    assert_refused(&format!("PUT {refused} after the restart"), &put, 409, why);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_then_a_folder_of_its_name_is_refused_and_the_file_stays_through_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("a", b"the file a".to_vec()).await, 201);
    for proto in ALL_PROTOS {
        for method in [Method::PUT, Method::POST] {
            let refused = request(&server, proto, method.clone(), "a/b", b"under a file").await;
            assert_refused(&format!("{method} a/b over {proto:?}"), &refused, 409, "`a` is a file");
            let deeper = request(&server, proto, method.clone(), "a/b/c.m4s", b"deeper").await;
            assert_refused(
                &format!("{method} a/b/c.m4s over {proto:?}"),
                &deeper,
                409,
                "`a` is a file",
            );
        }
        assert_eq!(
            get_bytes(&server, proto, "a").await,
            (200, b"the file a".to_vec()),
            "over {proto:?}"
        );
        assert_eq!(get_bytes(&server, proto, "a/b").await.0, 404, "a/b over {proto:?}");
    }
    let root = server.root.clone();
    server.stop().await;
    assert_eq!(
        std::fs::read(root.join("a")).ok().as_deref(),
        Some(b"the file a".as_slice())
    );

    after_restart(dir.path(), ("a", b"the file a"), ("a/b", "`a` is a file")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_then_a_file_of_its_name_is_refused_and_the_folder_stays_through_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(server.put("a/b/c.m4s", b"the file a/b/c".to_vec()).await, 201);
    for proto in ALL_PROTOS {
        for method in [Method::PUT, Method::POST] {
            for folder in ["a", "a/b"] {
                let refused = request(&server, proto, method.clone(), folder, b"over a folder").await;
                assert_refused(
                    &format!("{method} {folder} over {proto:?}"),
                    &refused,
                    409,
                    &format!("`{folder}` is a folder"),
                );
            }
        }
        assert_eq!(
            get_bytes(&server, proto, "a/b/c.m4s").await,
            (200, b"the file a/b/c".to_vec()),
            "over {proto:?}"
        );
        assert_eq!(get_bytes(&server, proto, "a").await.0, 404, "a over {proto:?}");
    }
    server.stop().await;

    after_restart(dir.path(), ("a/b/c.m4s", b"the file a/b/c"), ("a", "`a` is a folder")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_progress_holds_its_name_and_its_folders() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    let growing = server.feed(Proto::H1, "g/seg.m4s", "first chunk;").await;
    let file = server.feed(Proto::H2c, "f", "first chunk;").await;
    for proto in ALL_PROTOS {
        let over = request(&server, proto, Method::PUT, "g", b"over a growing upload's folder").await;
        assert_refused(&format!("PUT g over {proto:?}"), &over, 409, "`g` is a folder");
        let under = request(&server, proto, Method::PUT, "f/x.m4s", b"under a growing file").await;
        assert_refused(&format!("PUT f/x.m4s over {proto:?}"), &under, 409, "`f` is a file");
    }
    growing.send("second chunk").await;
    assert_eq!(growing.end().await, Ok(201), "the growing upload was not disturbed");
    assert_eq!(file.end().await, Ok(201), "the growing file was not disturbed");

    // An upload that fails midway gives its name and folders back.
    let cut = server.feed(Proto::H1, "h/seg.m4s", "first chunk;").await;
    let entry = std::sync::Arc::clone(&cut.entry);
    cut.cut().await;
    assert!(
        !entry.wait_for_len(u64::MAX, Duration::from_secs(10)).await,
        "the cut upload ends"
    );
    assert_eq!(entry.state(), ldash::store::EntryState::Aborted);
    tokio::time::timeout(Duration::from_secs(10), async {
        // The store drops the path right after marking the entry aborted (no event for it).
        while server.store.get("h/seg.m4s").is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the aborted upload leaves the store");
    assert_eq!(
        server.put("h", b"h is a file now".to_vec()).await,
        201,
        "PUT h after the cut upload"
    );
    server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| {}).await;
    assert_eq!(
        get_bytes(&server, Proto::H1, "g/seg.m4s").await,
        (200, b"first chunk;second chunk".to_vec())
    );
    assert_eq!(
        get_bytes(&server, Proto::H1, "f").await,
        (200, b"first chunk;".to_vec())
    );
    assert_eq!(
        get_bytes(&server, Proto::H1, "h").await,
        (200, b"h is a file now".to_vec())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_or_folder_on_disk_that_the_store_does_not_serve_is_in_the_way_too() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    // Put there behind ldash's back: a folder holding only a hidden file, and a file.
    std::fs::create_dir_all(server.root.join("d")).expect("folder");
    std::fs::write(server.root.join("d/.keep"), b"hidden").expect("hidden file");
    std::fs::write(server.root.join("e"), b"a file ldash did not write").expect("file");
    let before = snapshot(&server.root);
    let over = request(&server, Proto::H1, Method::PUT, "d", b"over a folder on disk").await;
    assert_refused("PUT d", &over, 409, "`d` is a folder");
    let under = request(&server, Proto::H1, Method::PUT, "e/x.m4s", b"under a file on disk").await;
    assert_refused("PUT e/x.m4s", &under, 409, "`e` is a file");
    server.store.flush().await;
    assert_eq!(snapshot(&server.root), before, "the root changed");
    assert_eq!(server.store.stats().persist_errors, 0, "a refused upload was written");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_freed_by_a_delete_can_change_from_file_to_folder_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_in(dir.path(), |_| {}).await;
    for round in 0..3 {
        // Each delete's removal from disk is queued; the next upload must not be refused for it.
        for path in ["n", "n/m.m4s"] {
            let put = server.put(path, format!("{path} {round}")).await;
            assert_eq!(put, 201, "round {round}: PUT {path}");
            let (status, _) = request(&server, Proto::H1, Method::DELETE, path, b"").await;
            assert_eq!(status, 204, "round {round}: DELETE {path}");
        }
    }
    assert_eq!(server.put("n", b"last".to_vec()).await, 201);
    server.store.flush().await;
    assert_eq!(server.store.stats().persist_errors, 0, "a write failed");
    let root = server.root.clone();
    server.stop().await;
    assert_eq!(std::fs::read(root.join("n")).ok().as_deref(), Some(b"last".as_slice()));
}

/// A store path the test knows is valid.
fn sp(path: &str) -> ldash::store::StorePath {
    ldash::store::StorePath::new(path).unwrap_or_else(|e| panic!("{path:?} is not a valid store path: {e}"))
}
