//! Tests of the segment store on its own (no HTTP): concurrent readers of a growing upload, aborts,
//! atomic replacement, deletion, persistence, garbage collection, memory eviction, limits and ranges.
//!
//! Every test has its own temporary root. Nothing here sleeps to synchronise: tasks meet through
//! channels and barriers, or through the reader's own waiting. Timeouts are only a guard that turns
//! a hang into a failure.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use ldash::store::{Entry, EntryState, Landed, Limits, ReadError, Reader, Store, StoreError, Upload, UploadOptions};
use tempfile::TempDir;
use tokio::sync::{mpsc, Barrier};

/// Longest a real-time test waits for anything before calling it a hang.
const HANG: Duration = Duration::from_secs(30);

fn temp_root() -> TempDir {
    TempDir::new().expect("could not create a temporary root folder")
}

fn open(root: &Path, limits: Limits) -> Store {
    Store::open(root, limits).expect("Store::open failed on a fresh temporary root")
}

/// The default limits, changed by `change`.
fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

/// A store with `limits` on a fresh temporary root (kept as long as the returned folder is).
fn fresh(limits: Limits) -> (TempDir, Store) {
    let root = temp_root();
    let store = open(root.path(), limits);
    (root, store)
}

/// Deterministic pseudo-random bytes (xorshift), different for every seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs `fut`, failing the test if it does not finish within [`HANG`].
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(HANG, fut).await {
        Ok(out) => out,
        Err(_) => panic!("hang: {what} did not finish within {HANG:?}"),
    }
}

/// Polls `fut` exactly once: Some(output) if it was ready, None if it is waiting.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await
}

/// How a reader ended.
#[derive(Debug)]
enum Ending {
    Clean,
    Failed(ReadError),
}

/// The chunk a reader's `next_chunk` gave; anything else fails the test, saying what was expected.
fn chunk(next: Option<Result<Bytes, ReadError>>, expected: &str) -> Bytes {
    match next {
        Some(Ok(chunk)) => chunk,
        other => panic!("expected {expected}, got {other:?}"),
    }
}

/// Reads until the reader ends; returns the bytes received and how it ended.
async fn drain(reader: &mut Reader) -> (Vec<u8>, Ending) {
    let mut got = Vec::new();
    loop {
        match reader.next_chunk().await {
            None => return (got, Ending::Clean),
            Some(Ok(chunk)) => got.extend_from_slice(&chunk),
            Some(Err(err)) => return (got, Ending::Failed(err)),
        }
    }
}

/// Reads the rest of what `reader` gives, which must end cleanly (`what` it reads, for messages).
async fn read_rest(reader: &mut Reader, what: &str) -> Vec<u8> {
    let (rest, ending) = within(&format!("the rest of {what}"), drain(reader)).await;
    assert!(matches!(ending, Ending::Clean), "{what} must end cleanly: {ending:?}");
    rest
}

/// Reads `start..end` of an entry that must end cleanly.
async fn read_range(entry: &Arc<Entry>, start: u64, end: Option<u64>) -> Vec<u8> {
    let mut reader = entry.reader(start, end);
    let (got, ending) = within(
        &format!("reading {}[{start}..{end:?}]", entry.path()),
        drain(&mut reader),
    )
    .await;
    match ending {
        Ending::Clean => got,
        Ending::Failed(err) => panic!(
            "reading {}[{start}..{end:?}] failed after {} bytes: {err}",
            entry.path(),
            got.len()
        ),
    }
}

/// A new upload of `path` that has appended `first`, and a reader from its start (a growing upload
/// must be readable).
fn growing_followed(store: &Store, path: &str, first: &[u8]) -> (Upload, Reader) {
    let upload = growing(store, path, first);
    let entry = store.get(path).expect("a growing upload must be readable");
    (upload, entry.reader(0, None))
}

/// Reads the whole of the version `store.get(path)` serves now.
async fn read_path(store: &Store, path: &str) -> Vec<u8> {
    let entry = store
        .get(path)
        .unwrap_or_else(|| panic!("get({path:?}) returned None; expected a stored entry"));
    read_range(&entry, 0, None).await
}

/// Asserts that `store.get(path)` serves exactly `want` now.
async fn assert_serves(store: &Store, path: &str, want: &[u8], what: &str) {
    assert_bytes(what, &read_path(store, path).await, want);
}

/// Asserts two byte strings are identical, reporting the first difference (not megabytes of bytes).
fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, expected {} bytes; first differing offset: {first:?}",
        got.len(),
        want.len()
    );
}

/// Uploads `chunks` to `path` and completes the upload.
fn put(store: &Store, path: &str, chunks: &[&[u8]]) -> Landed {
    let mut upload = store
        .begin_upload(&sp(path), UploadOptions::default())
        .unwrap_or_else(|e| panic!("begin_upload({path:?}) refused: {e}"));
    for chunk in chunks {
        upload
            .append(Bytes::copy_from_slice(chunk))
            .unwrap_or_else(|e| panic!("append to {path:?} refused: {e}"));
    }
    upload
        .finish()
        .unwrap_or_else(|e| panic!("finish of {path:?} refused: {e}"))
}

/// A new upload of `path` that has appended `first`.
fn growing(store: &Store, path: &str, first: &[u8]) -> Upload {
    let mut upload = begin(store, path);
    append(&mut upload, first);
    upload
}

fn begin(store: &Store, path: &str) -> Upload {
    store
        .begin_upload(&sp(path), UploadOptions::default())
        .unwrap_or_else(|e| panic!("begin_upload({path:?}) refused: {e}"))
}

fn append(upload: &mut Upload, bytes: &[u8]) {
    let path = upload.entry().path().to_owned();
    upload
        .append(Bytes::copy_from_slice(bytes))
        .unwrap_or_else(|e| panic!("append of {} bytes to {path:?} refused: {e}", bytes.len()));
}

/// What the disk holds for `path` once the store has written everything.
async fn persisted(store: &Store, root: &TempDir, path: &str) -> Option<Vec<u8>> {
    store.flush().await;
    on_disk(root.path(), path)
}

fn on_disk(root: &Path, path: &str) -> Option<Vec<u8>> {
    match std::fs::read(root.join(path)) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("could not read {path:?} under the root: {e}"),
    }
}

// 1. Concurrency: one writer, many readers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_readers_of_a_growing_upload_receive_exactly_the_written_bytes() {
    const READERS: usize = 100;
    const CHUNKS: usize = 200;
    let (_root, store) = fresh(Limits::default());
    let path = "live/stream0/seg-1.m4s";

    let mut upload = begin(&store, path);
    let start = Arc::new(Barrier::new(READERS + 1));
    let mut readers = Vec::new();
    for i in 0..READERS {
        let entry = store
            .get(path)
            .expect("a new path must be readable as soon as its upload begins");
        let start = Arc::clone(&start);
        readers.push(tokio::spawn(async move {
            let mut reader = entry.reader(0, None);
            start.wait().await;
            let (got, ending) = drain(&mut reader).await;
            (i, got, ending)
        }));
    }

    // Chunk sizes vary from 1 byte to 8 KiB, deterministically.
    let sizes = pattern(7, CHUNKS * 2);
    let mut written = Vec::new();
    start.wait().await;
    for n in 0..CHUNKS {
        let len = 1 + (usize::from(sizes[2 * n]) * 256 + usize::from(sizes[2 * n + 1])) % 8192;
        let chunk = pattern(1000 + n as u64, len);
        written.extend_from_slice(&chunk);
        upload
            .append(Bytes::from(chunk))
            .unwrap_or_else(|e| panic!("append of chunk {n} refused: {e}"));
        tokio::task::yield_now().await;
    }
    assert_eq!(
        upload.finish(),
        Ok(Landed::Created),
        "the first upload of a path must land as Created"
    );

    for handle in readers {
        let (i, got, ending) = within("a reader task", handle).await.expect("a reader task panicked");
        assert!(
            matches!(ending, Ending::Clean),
            "reader {i} did not end cleanly after finish: {ending:?}"
        );
        assert_bytes(&format!("reader {i}"), &got, &written);
    }
    assert_serves(&store, path, &written, "a reader opened after finish").await;
}

// 2. A waiting reader is woken by the next append.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_waiting_in_another_task_receives_a_chunk_appended_later_and_ends_after_finish() {
    let (_root, store) = fresh(Limits::default());
    let path = "live/seg-2.m4s";
    let mut upload = begin(&store, path);
    append(&mut upload, b"chunk one;");

    let entry = store.get(path).expect("a growing upload must be readable");
    let (first_tx, mut first_rx) = mpsc::channel(1);
    let (rest_tx, mut rest_rx) = mpsc::channel(4);
    let reader = tokio::spawn(async move {
        let mut reader = entry.reader(0, None);
        let first = reader.next_chunk().await;
        first_tx.send(first).await.expect("the test stopped listening");
        // This waits: nothing more has been appended yet.
        loop {
            let next = reader.next_chunk().await;
            let end = !matches!(next, Some(Ok(_)));
            rest_tx.send(next).await.expect("the test stopped listening");
            if end {
                return;
            }
        }
    });

    let first = within("the first chunk", first_rx.recv())
        .await
        .expect("reader task ended early");
    let first = chunk(first, "chunk one from the reader's first next_chunk");
    assert_eq!(&first[..], b"chunk one;", "the reader's first chunk is wrong");
    assert!(
        rest_rx.try_recv().is_err(),
        "the reader returned something before the second chunk existed"
    );

    append(&mut upload, b"chunk two");
    let second = within("the second chunk", rest_rx.recv()).await.flatten();
    let second = chunk(second, "the chunk appended after the reader waited");
    assert_eq!(&second[..], b"chunk two", "the waiting reader received the wrong bytes");
    assert!(
        rest_rx.try_recv().is_err(),
        "the reader must keep waiting (not end) while the upload is still growing"
    );

    upload.finish().expect("finish refused");
    match within("the end of the reader", rest_rx.recv()).await {
        Some(None) => {}
        other => panic!("after finish the reader should end cleanly with None, got {other:?}"),
    }
    within("the reader task", reader)
        .await
        .expect("the reader task panicked");
}

#[tokio::test]
async fn caught_up_reader_is_pending_until_the_next_append_then_gets_it_then_none_after_finish() {
    let (_root, store) = fresh(Limits::default());
    let path = "live/seg-3.m4s";
    let (mut upload, mut reader) = growing_followed(&store, path, b"first");
    let first = chunk(reader.next_chunk().await, "the first chunk");
    assert_eq!(&first[..], b"first", "wrong first chunk");

    {
        let mut next = Box::pin(reader.next_chunk());
        assert!(
            poll_once(&mut next).await.is_none(),
            "a reader that has caught up with a growing entry must wait, not return"
        );
        append(&mut upload, b"second");
        let woken = within("the chunk appended while the reader waited", next).await;
        let woken = chunk(woken, "the chunk appended while the reader waited");
        assert_eq!(&woken[..], b"second", "the woken reader got the wrong bytes");
    }

    let mut next = Box::pin(reader.next_chunk());
    assert!(
        poll_once(&mut next).await.is_none(),
        "the reader must wait again once it has caught up"
    );
    upload.finish().expect("finish refused");
    assert!(
        within("the reader's end", next).await.is_none(),
        "a waiting reader must end cleanly (None) when the upload finishes"
    );
    assert!(
        reader.next_chunk().await.is_none(),
        "a reader that ended must keep returning None"
    );
}

// 3. Aborts.

/// A reader task's result: the bytes it received and how it ended.
type ReaderTask = tokio::task::JoinHandle<(Vec<u8>, Ending)>;

/// A new upload of `path` that has appended `first`, followed by `n` reader tasks that each read one
/// chunk, report it, then read to the end; returns once every one has its first chunk.
async fn growing_with_readers(store: &Store, path: &str, first: &[u8], n: usize) -> (Upload, Vec<ReaderTask>) {
    let upload = growing(store, path, first);
    let (started_tx, mut started_rx) = mpsc::channel(n);
    let handles = (0..n)
        .map(|i| {
            let entry = store.get(path).expect("a growing upload must be readable");
            let started = started_tx.clone();
            tokio::spawn(async move {
                let mut reader = entry.reader(0, None);
                let mut got = chunk(reader.next_chunk().await, &format!("a first chunk at reader {i}")).to_vec();
                started.send(i).await.expect("the test stopped listening");
                let (rest, ending) = drain(&mut reader).await;
                got.extend_from_slice(&rest);
                (got, ending)
            })
        })
        .collect();
    for _ in 0..n {
        within("readers receiving their first chunk", started_rx.recv())
            .await
            .expect("a reader task ended before receiving its first chunk");
    }
    (upload, handles)
}

async fn check_readers_saw_abort(how: &str, handles: Vec<ReaderTask>, written_before_abort: &[u8]) {
    for (i, handle) in handles.into_iter().enumerate() {
        let (got, ending) = within("a reader of an aborted upload", handle)
            .await
            .expect("a reader task panicked");
        assert!(
            matches!(ending, Ending::Failed(ReadError::Aborted)),
            "reader {i} of an upload {how} must end with ReadError::Aborted, got {ending:?}"
        );
        assert!(
            written_before_abort.starts_with(&got),
            "reader {i} of an upload {how} received bytes that were never written"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_abort_ends_readers_with_an_error_and_leaves_nothing_in_memory_or_on_disk() {
    // 4000 bytes before the readers attach, 3000 after.
    let written = pattern(1, 7000);
    let (root, store) = fresh(Limits::default());
    let path = "live/aborted.m4s";
    let (mut upload, handles) = growing_with_readers(&store, path, &written[..4000], 8).await;
    let entry = store.get(path).expect("a growing upload must be readable");
    append(&mut upload, &written[4000..]);

    upload.abort();

    check_readers_saw_abort("aborted explicitly", handles, &written).await;
    assert!(
        store.get(path).is_none(),
        "get of a new path whose only upload was aborted must be None"
    );
    let mut late = entry.reader(0, None);
    assert!(
        matches!(late.next_chunk().await, Some(Err(ReadError::Aborted))),
        "a reader opened on an aborted entry must fail with Aborted, not end cleanly"
    );
    assert!(
        matches!(late.next_chunk().await, Some(Err(ReadError::Aborted))),
        "an aborted reader must keep failing with Aborted"
    );
    assert_eq!(entry.state(), EntryState::Aborted, "the aborted entry's state");
    assert_eq!(store.memory_used(), 0, "an aborted upload's chunks must be freed");
    assert_eq!(
        persisted(&store, &root, path).await,
        None,
        "the partial data of an aborted upload must not be written to disk"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_unfinished_upload_aborts_it_for_readers_and_leaves_nothing_on_disk() {
    let (root, store) = fresh(Limits::default());
    let path = "live/dropped.m4s";
    let first = pattern(3, 1500);
    let (upload, handles) = growing_with_readers(&store, path, &first, 5).await;

    // The writer goes away, e.g. the encoder's connection dropped mid-upload.
    tokio::spawn(async move { drop(upload) })
        .await
        .expect("the task dropping the upload panicked");

    check_readers_saw_abort("dropped unfinished", handles, &first).await;
    assert!(
        store.get(path).is_none(),
        "get of a new path whose only upload was dropped must be None"
    );
    assert!(
        store.is_empty(),
        "the store must hold no path after the only upload was dropped"
    );
    assert!(
        persisted(&store, &root, path).await.is_none(),
        "the partial data of a dropped upload must not be written to disk"
    );
    // The path can be uploaded again from scratch.
    put(&store, path, &[b"again"]);
    assert_serves(&store, path, b"again", "a fresh upload after a dropped one").await;
}

// 4. Atomic replacement.

#[tokio::test]
async fn replacement_upload_is_invisible_until_it_finishes_then_replaces_atomically() {
    let (root, store) = fresh(Limits::default());
    let path = "live/stream.mpd";
    let v1 = pattern(10, 5000);
    let v2 = pattern(20, 7000);
    assert_eq!(
        put(&store, path, &[&v1[..2000], &v1[2000..]]),
        Landed::Created,
        "first version must land as Created"
    );

    let mut upload = begin(&store, path);
    assert_eq!(
        upload.entry().state(),
        EntryState::Growing,
        "the replacement is growing"
    );
    append(&mut upload, &v2[..3000]);

    let during = store.get(path).expect("v1 must stay served while v2 is uploaded");
    assert_eq!(
        during.state(),
        EntryState::Complete,
        "get must return the complete v1, not the growing v2"
    );
    assert_eq!(
        during.len(),
        v1.len() as u64,
        "get must return v1's length while v2 grows"
    );
    assert_bytes("get while v2 grows", &read_range(&during, 0, None).await, &v1);

    // A v1 reader that is midway when v2 lands keeps reading v1.
    let mut midway = during.reader(0, None);
    let head = chunk(midway.next_chunk().await, "v1's first chunk");

    append(&mut upload, &v2[3000..]);
    assert_serves(
        &store,
        path,
        &v1,
        "a new reader after v2's last append but before finish",
    )
    .await;
    assert_eq!(upload.finish(), Ok(Landed::Replaced), "v2 must land as Replaced");

    assert_serves(&store, path, &v2, "get after v2 finished").await;
    let tail = read_rest(&mut midway, "the midway v1 reader").await;
    assert_bytes(
        "a v1 reader that was midway when v2 landed",
        &[&head[..], &tail[..]].concat(),
        &v1,
    );
    assert_eq!(
        persisted(&store, &root, path).await,
        Some(v2.clone()),
        "the file on disk must be v2 after flush"
    );
}

#[tokio::test]
async fn aborted_or_dropped_replacement_leaves_the_previous_version_served() {
    let (root, store) = fresh(Limits::default());
    let path = "live/init.m4s";
    let v1 = pattern(30, 3333);
    put(&store, path, &[&v1]);
    store.flush().await;

    let aborted = growing(&store, path, &pattern(31, 100));
    aborted.abort();
    assert_serves(&store, path, &v1, "get after an aborted replacement").await;

    let dropped = growing(&store, path, &pattern(32, 100));
    drop(dropped);
    assert_serves(&store, path, &v1, "get after a dropped replacement").await;
    assert_eq!(
        store.get(path).map(|e| e.state()),
        Some(EntryState::Complete),
        "the served version must still be the complete v1"
    );

    assert_eq!(
        persisted(&store, &root, path).await,
        Some(v1.clone()),
        "the file on disk must still be v1 after failed replacements"
    );
    // And a later replacement still works.
    assert_eq!(
        put(&store, path, &[b"v4"]),
        Landed::Replaced,
        "a later replacement must land"
    );
    assert_serves(&store, path, b"v4", "get after a successful replacement").await;
}

// 5. The newest writer of a path wins.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_upload_of_a_growing_path_aborts_the_first_and_its_readers() {
    let (_root, store) = fresh(Limits::default());
    let path = "live/seg-9.m4s";
    let old = pattern(40, 2000);
    let (mut first, handles) = growing_with_readers(&store, path, &old, 4).await;

    let mut second = begin(&store, path);
    check_readers_saw_abort("superseded by a newer upload", handles, &old).await;
    assert_eq!(
        first.append(Bytes::from_static(b"more")),
        Err(StoreError::Superseded),
        "append to a superseded upload must return Superseded"
    );
    let now = store.get(path).expect("the path must be served by the newer upload");
    assert!(
        Arc::ptr_eq(&now, second.entry()),
        "get must return the newer upload's entry"
    );
    assert_eq!(now.len(), 0, "the newer upload starts empty (no bytes from the first)");
    drop(first);
    assert!(
        store.get(path).is_some_and(|e| Arc::ptr_eq(&e, second.entry())),
        "dropping the superseded upload must not remove the newer one"
    );

    let new = pattern(41, 2500);
    append(&mut second, &new);
    assert_eq!(
        second.finish(),
        Ok(Landed::Created),
        "the newer upload lands (no complete version existed)"
    );
    assert_serves(&store, path, &new, "get after the newer upload finished").await;
}

#[tokio::test]
async fn superseded_upload_cannot_finish_and_does_not_clobber_the_newer_one() {
    let (root, store) = fresh(Limits::default());
    let path = "live/seg-10.m4s";
    let first = growing(&store, path, b"old");
    let second = growing(&store, path, b"new");
    assert_eq!(
        first.finish(),
        Err(StoreError::Superseded),
        "finish of a superseded upload must fail with Superseded"
    );
    second.finish().expect("the newer upload must finish");
    store.flush().await;
    assert_serves(&store, path, b"new", "get").await;
    assert_eq!(
        on_disk(root.path(), path),
        Some(b"new".to_vec()),
        "the file on disk must be the newer upload"
    );
}

#[tokio::test]
async fn second_replacement_of_a_complete_path_aborts_the_first_replacement_and_v1_stays_until_it_lands() {
    let (_root, store) = fresh(Limits::default());
    let path = "live/manifest.m3u8";
    put(&store, path, &[b"version one"]);
    let mut first = growing(&store, path, b"half of version two");
    let pending = Arc::clone(first.entry());
    let mut second = begin(&store, path);
    assert_eq!(
        pending.state(),
        EntryState::Aborted,
        "the first pending replacement must be aborted by the second"
    );
    assert_eq!(
        first.append(Bytes::from_static(b"x")),
        Err(StoreError::Superseded),
        "append to the aborted replacement must return Superseded"
    );
    drop(first);
    assert_serves(&store, path, b"version one", "get while the second replacement grows").await;
    append(&mut second, b"version three");
    assert_eq!(
        second.finish(),
        Ok(Landed::Replaced),
        "the second replacement must land as Replaced"
    );
    assert_serves(&store, path, b"version three", "get after the second replacement").await;
}

// 6. Delete.

#[tokio::test]
async fn delete_removes_from_memory_and_disk_and_reports_missing_paths() {
    let (root, store) = fresh(Limits::default());
    let path = "live/old/seg-1.m4s";
    put(&store, path, &[&pattern(50, 10_000)]);
    assert!(
        persisted(&store, &root, path).await.is_some(),
        "precondition: the file is on disk after flush"
    );

    assert!(
        store.delete(&sp(path), None),
        "delete of a stored path must return true"
    );
    assert!(store.get(path).is_none(), "get after delete must be None");
    assert_eq!(store.len(), 0, "the store must hold no path after the delete");
    assert_eq!(store.memory_used(), 0, "delete must free the entry's memory");
    assert!(
        persisted(&store, &root, path).await.is_none(),
        "the file must be gone from disk after delete + flush"
    );
    assert!(
        !root.path().join("live/old").exists(),
        "folders left empty by the delete must be removed"
    );
    assert!(root.path().exists(), "the root itself must never be removed");

    assert!(
        !store.delete(&sp(path), None),
        "a second delete of the same path must return false"
    );
    assert!(
        !store.delete(&sp("never/stored.m4s"), None),
        "delete of a path never stored must return false"
    );
}

#[tokio::test]
async fn delete_of_a_growing_upload_aborts_it() {
    let (root, store) = fresh(Limits::default());
    let path = "live/growing.m4s";
    let (mut upload, mut reader) = growing_followed(&store, path, b"partial");
    assert!(
        store.delete(&sp(path), None),
        "delete of a growing path must return true"
    );
    let (_, ending) = within("reader of a deleted upload", drain(&mut reader)).await;
    assert!(
        matches!(ending, Ending::Failed(ReadError::Aborted)),
        "a reader of a deleted growing upload must fail with Aborted, got {ending:?}"
    );
    assert_eq!(
        upload.append(Bytes::from_static(b"more")),
        Err(StoreError::Superseded),
        "append after the path was deleted must return Superseded"
    );
    assert_eq!(
        upload.finish(),
        Err(StoreError::Superseded),
        "finish after delete must fail"
    );
    store.flush().await;
    assert!(store.get(path).is_none(), "a deleted upload must not come back");
    assert!(
        on_disk(root.path(), path).is_none(),
        "a deleted upload must not reach the disk"
    );
}

// 7. Persistence.

#[tokio::test]
async fn finished_uploads_are_persisted_and_served_by_a_reopened_store_without_hidden_files() {
    let root = temp_root();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("live/stream.mpd", pattern(60, 900)),
        ("live/stream0/init.m4s", pattern(61, 1200)),
        ("live/stream0/seg-1.m4s", pattern(62, 300_000)),
        ("top.txt", b"at the root".to_vec()),
    ];
    {
        let store = open(root.path(), Limits::default());
        for (path, bytes) in &files {
            let chunks: Vec<&[u8]> = bytes.chunks(7777).collect();
            put(&store, path, &chunks);
        }
        store.flush().await;
        for (path, bytes) in &files {
            assert_eq!(
                on_disk(root.path(), path).as_deref(),
                Some(&bytes[..]),
                "after finish + flush, {path} must be on disk with exactly the uploaded bytes"
            );
        }
    }

    // Hidden files and folders are not content.
    std::fs::write(root.path().join(".hidden"), b"secret").expect("write .hidden");
    std::fs::write(root.path().join("live/.partial.m4s"), b"partial").expect("write live/.partial.m4s");
    std::fs::create_dir_all(root.path().join(".cache/sub")).expect("create .cache");
    std::fs::write(root.path().join(".cache/sub/seg.m4s"), b"cached").expect("write .cache/sub/seg.m4s");

    let store = open(root.path(), Limits::default());
    assert_eq!(
        store.len(),
        files.len(),
        "the reopened store must index exactly the uploaded files (no hidden ones)"
    );
    for hidden in [".hidden", "live/.partial.m4s", ".cache/sub/seg.m4s"] {
        assert!(store.get(hidden).is_none(), "hidden file {hidden} must not be indexed");
    }
    for (path, bytes) in &files {
        let entry = store
            .get(path)
            .unwrap_or_else(|| panic!("the reopened store must serve {path}"));
        assert_eq!(
            entry.state(),
            EntryState::Complete,
            "{path} must be complete after reopening"
        );
        assert_eq!(entry.len(), bytes.len() as u64, "{path} length after reopening");
        assert_bytes(
            &format!("{path} from the reopened store"),
            &read_range(&entry, 0, None).await,
            bytes,
        );
    }
    assert_eq!(
        store.memory_used(),
        0,
        "a reopened store serves files from disk, not memory"
    );

    let (path, bytes) = &files[2];
    let entry = store.get(path).expect("reopened entry");
    for (start, end) in [
        (0u64, 1u64),
        (1, 262_145),
        (262_143, 262_150),
        (100_000, 299_999),
        (299_999, 300_000),
    ] {
        assert_bytes(
            &format!("{path}[{start}..{end}] from disk"),
            &read_range(&entry, start, Some(end)).await,
            &bytes[start as usize..end as usize],
        );
    }
}

#[tokio::test]
async fn replacing_a_file_loaded_from_disk_persists_the_new_version() {
    let root = temp_root();
    {
        let store = open(root.path(), Limits::default());
        put(&store, "a/b.m4s", &[b"one"]);
        store.flush().await;
    }
    let store = open(root.path(), Limits::default());
    assert_eq!(
        put(&store, "a/b.m4s", &[b"two"]),
        Landed::Replaced,
        "a file from disk is replaced"
    );
    store.flush().await;
    assert_serves(&store, "a/b.m4s", b"two", "get after replacing a file from disk").await;
    assert_eq!(
        on_disk(root.path(), "a/b.m4s"),
        Some(b"two".to_vec()),
        "the disk copy is the new version"
    );
}

// 8. Garbage collection (paused time).

const TTL: Duration = Duration::from_secs(300);

fn gc_limits() -> Limits {
    limits(|l| l.ttl = Some(TTL))
}

/// Purges with `collect_garbage` and asserts `path` is gone. The store's own maintenance task also
/// collects garbage when time advances, so it may have purged the path first.
fn assert_purged(store: &Store, path: &str, when: &str) {
    let present_before = store.get(path).is_some();
    let purged = store.collect_garbage();
    if present_before {
        assert!(
            purged >= 1,
            "{when}: collect_garbage purged {purged} paths, expected {path} among them"
        );
    }
    assert!(store.get(path).is_none(), "{when}: {path} must be purged");
}

#[tokio::test(start_paused = true)]
async fn stats_count_uploads_in_progress_and_gc_purges() {
    let (_root, store) = fresh(gc_limits());
    put(&store, "live/seg-1.m4s", &[b"segment"]);
    let open_upload = store
        .begin_upload(&sp("live/seg-2.m4s"), UploadOptions::default())
        .expect("begin_upload");
    let stats = store.stats();
    assert_eq!(stats.uploads, 1, "one upload is open: {stats:?}");
    assert_eq!(stats.entries, 2, "two paths are stored: {stats:?}");
    assert_eq!(
        stats.memory_bytes, 7,
        "the complete segment's bytes are in memory: {stats:?}"
    );
    open_upload.abort();
    assert_eq!(store.stats().uploads, 0, "the aborted upload is no longer in progress");
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    assert_purged(&store, "live/seg-1.m4s", "past the ttl");
    assert_eq!(store.stats().purged, 1, "the purge is counted: {:?}", store.stats());
}

#[tokio::test]
async fn stats_count_uploads_that_could_not_be_persisted() {
    let (root, store) = fresh(Limits::default());
    // A folder the store does not know of (it holds only a hidden file, which is not content) is
    // where "blocker" would go, so "blocker" cannot be written. (A folder or file the store knows
    // of is refused before the upload starts: tests/root_safety.rs.)
    std::fs::create_dir_all(root.path().join("blocker")).expect("a folder in the way");
    std::fs::write(root.path().join("blocker/.keep"), b"").expect("a hidden file in it");
    put(&store, "blocker", &[b"a file"]);
    store.flush().await;
    assert_eq!(
        store.stats().persist_errors,
        1,
        "the failed write is counted: {:?}",
        store.stats()
    );
    assert!(store.get("blocker").is_some(), "it is still served from memory");
}

#[tokio::test(start_paused = true)]
async fn idle_folder_is_purged_after_the_ttl_and_not_before() {
    let (root, store) = fresh(gc_limits());
    let path = "live/seg-1.m4s";
    put(&store, path, &[b"segment"]);
    store.flush().await;
    assert!(on_disk(root.path(), path).is_some(), "precondition: persisted");

    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(
        store.collect_garbage(),
        0,
        "nothing may be purged 299 s after the last write (ttl 300 s)"
    );
    assert!(
        store.get(path).is_some(),
        "{path} must survive until the ttl has passed"
    );

    tokio::time::advance(Duration::from_secs(2)).await;
    assert_purged(&store, path, "301 s after the last write");
    assert!(
        persisted(&store, &root, path).await.is_none(),
        "a purged file must be removed from disk"
    );
    assert!(store.is_empty(), "the store must be empty after the purge");
}

#[tokio::test(start_paused = true)]
async fn files_of_a_folder_that_keeps_receiving_uploads_are_not_purged() {
    let (root, store) = fresh(gc_limits());
    let init = "live2/init.m4s";
    let idle = "other/seg-1.m4s";
    put(&store, init, &[b"init segment"]);
    put(&store, idle, &[b"idle"]);

    for n in 1..=6u64 {
        tokio::time::advance(Duration::from_secs(100)).await;
        put(&store, &format!("live2/seg-{n}.m4s"), &[b"media segment"]);
        let at = 100 * n;
        if at >= 300 {
            assert_purged(&store, idle, &format!("t={at}s, folder 'other' idle since t=0"));
        } else {
            store.collect_garbage();
        }
        assert!(
            store.get(init).is_some(),
            "t={at}s: {init} was written once at t=0 but its folder is still active; it must not be purged"
        );
        assert!(
            store.get("live2/seg-1.m4s").is_some(),
            "t={at}s: segments of the active folder must not be purged"
        );
    }
    assert!(
        persisted(&store, &root, init).await.is_some(),
        "{init} must still be on disk while its folder is active"
    );

    // The stream stops: the whole folder expires together.
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    assert_purged(&store, init, "ttl after the stream stopped");
    assert!(store.is_empty(), "every file of the stopped stream must be purged");
}

#[tokio::test(start_paused = true)]
async fn growing_upload_in_an_idle_folder_is_not_purged() {
    let (_root, store) = fresh(gc_limits());
    let path = "slow/seg.m4s";
    let mut upload = growing(&store, path, b"slow");
    tokio::time::advance(TTL * 2).await;
    assert_eq!(store.collect_garbage(), 0, "a growing upload must never be purged");
    assert!(store.get(path).is_some(), "the growing upload must still be served");
    append(&mut upload, b" encoder");
    upload.finish().expect("the slow upload must finish");
    store.flush().await;
    assert_serves(&store, path, b"slow encoder", "the slow upload").await;
}

// 9. Memory eviction.

const KIB: usize = 1024;

fn memory_limits() -> Limits {
    limits(|l| l.max_memory = 64 * KIB as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_entries_drop_below_the_memory_limit_and_are_still_served_exactly_from_disk() {
    let root = temp_root();
    let limits = memory_limits();
    let max = limits.max_memory;
    let store = open(root.path(), limits);
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("live/seg-{i}.m4s"), pattern(70 + i, 32 * KIB)))
        .collect();
    for (path, bytes) in &files {
        let chunks: Vec<&[u8]> = bytes.chunks(5000).collect();
        put(&store, path, &chunks);
        store.flush().await;
    }
    // A larger file, read from disk in several blocks.
    let big_path = "live/big.m4s";
    let big = pattern(79, 600 * KIB);
    put(&store, big_path, &big.chunks(64 * KIB).collect::<Vec<_>>());
    store.flush().await;

    store.evict_for_memory();
    let used = store.memory_used();
    assert!(
        used < max,
        "after evict_for_memory, memory_used ({used}) must be below the limit ({max})"
    );
    assert!(
        used <= max / 10 * 9,
        "eviction must bring memory_used ({used}) to 90% of the limit or below"
    );

    for (path, bytes) in files.iter().map(|(p, b)| (p.as_str(), b)).chain([(big_path, &big)]) {
        let entry = store
            .get(path)
            .unwrap_or_else(|| panic!("{path} must stay served after eviction"));
        assert_bytes(
            &format!("{path} after eviction"),
            &read_range(&entry, 0, None).await,
            bytes,
        );
        assert_bytes(
            &format!("{path}[10000..20000] after eviction"),
            &read_range(&entry, 10_000, Some(20_000)).await,
            &bytes[10_000..20_000],
        );
        assert_bytes(
            &format!("{path}[5000..] after eviction"),
            &read_range(&entry, 5000, None).await,
            &bytes[5000..],
        );
    }
    assert_bytes(
        "big[200000..530000] across disk blocks",
        &read_range(&store.get(big_path).expect("big"), 200_000, Some(530_000)).await,
        &big[200_000..530_000],
    );
    assert!(
        store.memory_used() < max,
        "reading evicted entries from disk must not bring them back over the limit ({} bytes used)",
        store.memory_used()
    );
}

#[tokio::test]
async fn idle_persisted_entries_leave_memory_and_are_served_from_disk() {
    // --dvr-window sets memory_idle: only the live edge stays in memory, whatever --max-memory.
    let (_root, store) = fresh(limits(|l| l.memory_idle = Some(Duration::ZERO)));
    let path = "live/seg-idle.m4s";
    let bytes = pattern(81, 48 * KIB);
    put(&store, path, &bytes.chunks(4000).collect::<Vec<_>>());
    store.flush().await;
    assert_eq!(
        store.evict_idle(),
        bytes.len() as u64,
        "idle and on disk: out of memory"
    );
    assert_eq!(store.memory_used(), 0);
    let entry = store.get(path).expect("still stored");
    assert_bytes("the idle entry, from disk", &read_range(&entry, 0, None).await, &bytes);
    let (_root, store) = fresh(Limits::default());
    put(&store, path, &[&bytes]);
    store.flush().await;
    assert_eq!(
        store.evict_idle(),
        0,
        "without memory_idle only --max-memory moves entries out"
    );
}

#[tokio::test]
async fn reader_midway_through_an_entry_continues_from_disk_after_eviction() {
    let (_root, store) = fresh(memory_limits());
    let path = "live/seg-evicted.m4s";
    let bytes = pattern(80, 128 * KIB);
    let (mut upload, mut reader) = growing_followed(&store, path, &bytes[..16 * KIB]);
    let mut got = chunk(reader.next_chunk().await, "the first chunk from memory").to_vec();
    for chunk in bytes[16 * KIB..].chunks(16 * KIB) {
        append(&mut upload, chunk);
    }
    upload.finish().expect("finish refused");
    store.flush().await;
    store.evict_for_memory();
    assert_eq!(
        store.memory_used(),
        0,
        "the only entry is persisted and over the limit, so it must be evicted"
    );
    got.extend_from_slice(&read_rest(&mut reader, "the entry").await);
    assert_bytes("a reader that crossed an eviction", &got, &bytes);
}

// 10. Limits.

#[tokio::test]
async fn max_uploads_refuses_extra_uploads_with_busy_and_releases_slots() {
    let (_root, store) = fresh(limits(|l| l.max_uploads = 1));
    let first = growing(&store, "a.m4s", b"a");
    assert_eq!(
        store.begin_upload(&sp("b.m4s"), UploadOptions::default()).err(),
        Some(StoreError::Busy { limit: 1 }),
        "a second concurrent upload must be refused with Busy"
    );
    assert_eq!(
        store.begin_upload(&sp("b.m4s"), UploadOptions::default()).err(),
        Some(StoreError::Busy { limit: 1 }),
        "a refused upload must not release (or leak) the slot held by the first"
    );
    assert!(
        store.get("b.m4s").is_none(),
        "a refused upload must not create its path"
    );
    first.finish().expect("first upload must finish");

    let second = store.begin_upload(&sp("b.m4s"), UploadOptions::default());
    assert!(
        second.is_ok(),
        "finishing the first upload must release its slot: {second:?}"
    );
    drop(second);
    let third = store.begin_upload(&sp("c.m4s"), UploadOptions::default());
    assert!(third.is_ok(), "dropping an upload must release its slot: {third:?}");
    third.expect("checked").abort();
    let fourth = store.begin_upload(&sp("d.m4s"), UploadOptions::default());
    assert!(fourth.is_ok(), "aborting an upload must release its slot: {fourth:?}");
}

#[tokio::test]
async fn max_paths_refuses_new_paths_with_too_many_paths_but_allows_replacing() {
    let (_root, store) = fresh(limits(|l| (l.max_paths, l.max_uploads) = (2, 2)));
    put(&store, "a.m4s", &[b"a"]);
    put(&store, "b.m4s", &[b"b"]);
    assert_eq!(
        store.begin_upload(&sp("c.m4s"), UploadOptions::default()).err(),
        Some(StoreError::TooManyPaths { limit: 2 }),
        "a third path must be refused with TooManyPaths"
    );
    assert_eq!(
        put(&store, "a.m4s", &[b"a2"]),
        Landed::Replaced,
        "replacing an existing path must be allowed at the path limit"
    );
    // The refused uploads did not keep upload slots (max_uploads is 2).
    let one = begin(&store, "a.m4s");
    let two = begin(&store, "b.m4s");
    drop((one, two));
    assert!(store.delete(&sp("b.m4s"), None), "delete b");
    let c = store.begin_upload(&sp("c.m4s"), UploadOptions::default());
    assert!(c.is_ok(), "after a delete, a new path must be accepted: {c:?}");
    drop(c);
    assert_serves(&store, "a.m4s", b"a2", "a after the limit tests").await;
}

#[tokio::test]
async fn max_upload_bytes_refuses_the_append_that_would_exceed_it_with_too_large() {
    let (_root, store) = fresh(limits(|l| l.max_upload_bytes = 100));
    let bytes = pattern(90, 101);
    let mut upload = growing(&store, "big.m4s", &bytes[..60]);
    assert_eq!(
        upload.append(Bytes::copy_from_slice(&bytes[60..101])),
        Err(StoreError::TooLarge { limit: 100 }),
        "an append taking the upload to 101 bytes must be refused with TooLarge"
    );
    assert_eq!(
        upload.entry().len(),
        60,
        "the refused append must not store any of its bytes"
    );
    append(&mut upload, &bytes[60..100]);
    upload.finish().expect("an upload of exactly the limit must finish");
    assert_serves(
        &store,
        "big.m4s",
        &bytes[..100],
        "an upload of exactly max_upload_bytes",
    )
    .await;
}

#[tokio::test]
async fn memory_full_of_unpersisted_data_refuses_new_uploads_until_it_can_be_evicted() {
    let (_root, store) = fresh(memory_limits());
    let mut growing = begin(&store, "live/huge.m4s");
    let bytes = pattern(91, 100 * KIB);
    append(&mut growing, &bytes);
    assert_eq!(
        store.begin_upload(&sp("live/next.m4s"), UploadOptions::default()).err(),
        Some(StoreError::MemoryFull { limit: 64 * KIB as u64 }),
        "with memory over the limit and nothing persisted, a new upload must be refused with MemoryFull"
    );
    growing.finish().expect("finish refused");
    store.flush().await;
    let next = store.begin_upload(&sp("live/next.m4s"), UploadOptions::default());
    assert!(
        next.is_ok(),
        "once the data is persisted it can be evicted, so uploads resume: {next:?}"
    );
    assert!(
        store.memory_used() < 64 * KIB as u64,
        "the persisted upload must have been evicted"
    );
    drop(next);
    assert_serves(&store, "live/huge.m4s", &bytes, "the evicted upload").await;
}

// 11. Ranges.

#[tokio::test]
async fn range_readers_return_exactly_the_requested_bytes_across_chunk_boundaries() {
    let (_root, store) = fresh(Limits::default());
    let path = "vod/ranges.m4s";
    let sizes = [7usize, 1, 100, 33, 4096, 5, 900, 1];
    let bytes = pattern(100, sizes.iter().sum());
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in sizes {
        chunks.push(&bytes[at..at + size]);
        at += size;
    }
    put(&store, path, &chunks);
    let len = bytes.len() as u64;
    let entry = store.get(path).expect("stored entry");

    let boundaries: Vec<u64> = sizes
        .iter()
        .scan(0u64, |acc, &s| {
            *acc += s as u64;
            Some(*acc)
        })
        .collect();
    let mut cases: Vec<(u64, Option<u64>)> = vec![
        (0, Some(len)),
        (0, None),
        (0, Some(1)),
        (3, Some(9)),
        (6, Some(8)),
        (7, Some(8)),
        (8, Some(108)),
        (50, Some(5000)),
        (140, Some(4237)),
        (141, None),
        (len - 1, None),
        (len - 1, Some(len)),
        (10, Some(10)),
        (len, None),
        (len + 10, None),
        (100, Some(len + 1000)),
    ];
    for &b in &boundaries {
        cases.push((b.saturating_sub(1), Some((b + 1).min(len))));
        cases.push((b.min(len), None));
    }
    for (start, end) in cases {
        let from = (start.min(len)) as usize;
        let to = (end.unwrap_or(len).min(len) as usize).max(from);
        assert_bytes(
            &format!("range {start}..{end:?} of a {len}-byte entry"),
            &read_range(&entry, start, end).await,
            &bytes[from..to],
        );
    }
}

#[tokio::test]
async fn range_reader_of_a_growing_entry_waits_for_its_bytes_and_ends_at_its_end_before_finish() {
    let (_root, store) = fresh(Limits::default());
    let path = "live/ranged.m4s";
    let bytes = pattern(110, 300);
    let mut upload = growing(&store, path, &bytes[..50]);
    let entry = store.get(path).expect("growing upload readable");

    // Starts beyond what exists yet: waits.
    let mut beyond = entry.reader(100, Some(200));
    let mut within_range = entry.reader(20, Some(120));
    let mut got = chunk(within_range.next_chunk().await, "bytes 20..50").to_vec();
    assert_bytes("range 20..120 before the second append", &got, &bytes[20..50]);
    {
        let mut next = Box::pin(beyond.next_chunk());
        assert!(
            poll_once(&mut next).await.is_none(),
            "a reader starting beyond the written length must wait"
        );
        append(&mut upload, &bytes[50..250]);
        let woken = chunk(within("bytes 100..200", next).await, "bytes 100..200");
        assert_bytes("range 100..200 of a growing entry", &woken, &bytes[100..200]);
    }
    assert!(
        within("end of range 100..200", beyond.next_chunk()).await.is_none(),
        "a range reader must end at its end while the entry still grows"
    );
    got.extend_from_slice(&read_rest(&mut within_range, "range 20..120").await);
    assert_bytes("range 20..120 of a growing entry", &got, &bytes[20..120]);
    assert_eq!(
        entry.state(),
        EntryState::Growing,
        "precondition: the entry is still growing when the ranges end"
    );
    drop(upload);
}

// Regression: the memory gauge was once counted after the entry lock was released, so a concurrent
// abort could subtract first and wrap it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_gauge_never_wraps_while_uploads_of_one_path_supersede_each_other() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const CHUNK: usize = 100;
    const CHUNKS_PER_UPLOAD: usize = 4;
    const WRITERS: usize = 2;
    let (_root, store) = fresh(limits(|l| l.max_uploads = 1000));
    // Two encoders restarting on the same path: each begin_upload aborts the other's growing upload,
    // concurrently with its appends. At most WRITERS uploads hold data at once.
    let bound = (WRITERS * CHUNKS_PER_UPLOAD * CHUNK) as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        writers.push(std::thread::spawn(move || {
            let chunk = Bytes::from(vec![7u8; CHUNK]);
            while !stop.load(Ordering::Relaxed) {
                let mut upload = match store.begin_upload(&sp("live/restarting.m4s"), UploadOptions::default()) {
                    Ok(upload) => upload,
                    Err(err) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(err);
                    }
                };
                for _ in 0..CHUNKS_PER_UPLOAD {
                    if upload.append(chunk.clone()).is_err() {
                        break;
                    }
                }
            }
            Ok(())
        }));
    }
    let watcher = {
        let (store, stop, worst) = (store.clone(), Arc::clone(&stop), Arc::clone(&worst));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let used = store.memory_used();
                worst.fetch_max(used, Ordering::Relaxed);
                if used > bound {
                    stop.store(true, Ordering::Relaxed);
                }
            }
        })
    };
    // A bounded run (not synchronisation): stop after 3 s, or at once when the watcher saw a violation.
    let started = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(3) {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("the watcher thread panicked");
    for writer in writers {
        let result = writer.join().expect("a writer thread panicked");
        assert_eq!(
            result,
            Ok(()),
            "begin_upload refused with at most {bound} bytes really in memory (limit 1 GiB); memory_used peaked at {}",
            worst.load(Ordering::Relaxed)
        );
    }
    let worst = worst.load(Ordering::Relaxed);
    assert!(
        worst <= bound,
        "memory_used reported {worst} bytes while at most {bound} bytes were held (the gauge wrapped below zero)"
    );
    assert_eq!(
        store.memory_used(),
        0,
        "every upload was aborted, so no memory may remain counted"
    );
}

#[tokio::test]
async fn an_upload_that_arrived_earlier_never_replaces_one_that_arrived_later() {
    let dir = tempfile::tempdir().expect("dir");
    let store = ldash::store::Store::open(dir.path(), ldash::store::Limits::default()).expect("store");
    let mut newer = store
        .begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(20))
        .expect("newer upload");
    newer.append(bytes::Bytes::from_static(b"static")).expect("append");
    newer.finish().expect("finish");
    let stale = store.begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(10));
    assert!(
        matches!(stale, Err(ldash::store::StoreError::Stale)),
        "an earlier arrival is refused as stale"
    );
    let mut later = store
        .begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(30))
        .expect("a later arrival replaces");
    later.append(bytes::Bytes::from_static(b"v3")).expect("append");
    assert!(
        matches!(
            store.begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(25)),
            Err(ldash::store::StoreError::Stale)
        ),
        "older than the pending one"
    );
    later.finish().expect("finish");
    assert!(
        store
            .begin_upload(&sp("live/stream.mpd"), UploadOptions::default())
            .is_ok(),
        "without an arrival an upload is the newest"
    );
    // A delete is remembered: an upload that arrived before it cannot bring the path back.
    assert!(store.delete(&sp("live/stream.mpd"), Some(100)));
    assert!(matches!(
        store.begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(90)),
        Err(ldash::store::StoreError::Stale)
    ));
    assert!(
        store
            .begin_upload(&sp("live/stream.mpd"), UploadOptions::arrived(110))
            .is_ok(),
        "a later upload starts the path again"
    );
}

/// A store path the test knows is valid.
fn sp(path: &str) -> ldash::store::StorePath {
    ldash::store::StorePath::new(path).unwrap_or_else(|e| panic!("{path:?} is not a valid store path: {e}"))
}
