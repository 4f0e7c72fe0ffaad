//! A channel restored from what it stored (after a restart of ldash).

use super::*;

/// The video channel after `segments` segments of five chunks from wall time 10 s, its POST ended,
/// with what it stored (the segments still in the window: opened, not emptied, not deleted).
fn stored_channel(segments: u64) -> (Channel, Stored, u64) {
    let mut channel = channel();
    let init = parse_init(INIT).expect("init");
    let scale = u64::from(init.tracks[0].timescale);
    let fifth = scale / 5;
    channel.track_started("video", &init);
    let mut kept = std::collections::BTreeSet::new();
    for i in 0..segments * 5 {
        let placement = channel.place(
            "video",
            &chunk(i * fifth, fifth, i % 5 == 0),
            1000,
            at(10.0 + i as f64 / 5.0),
        );
        for step in placement.steps {
            match step {
                Step::Open { number } => {
                    kept.insert(number);
                }
                Step::Delete { number } | Step::Close { number, empty: true } => {
                    kept.remove(&number);
                }
                _ => {}
            }
        }
    }
    if let Some((number, true)) = channel.track_ended("video") {
        kept.remove(&number);
    }
    let stored = Stored {
        inits: [(("video".to_owned(), 0), init)].into_iter().collect(),
        segments: kept.into_iter().map(|n| ("video".to_owned(), n, 0)).collect(),
    };
    (channel, stored, fifth)
}

#[test]
fn a_channel_restored_from_what_it_stored_goes_on_as_the_one_that_stored_it() {
    let (original, stored, fifth) = stored_channel(5);
    let text = original.manifest(at(15.0)).expect("a manifest");
    assert!(text.contains(PACKAGED), "{text}");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    let restored = Channel::restored(original.options, &mpd, &stored).expect("restored");
    assert_eq!(restored.manifest(at(15.0)), original.manifest(at(15.0)));
    let init = parse_init(INIT).expect("init");
    // An encoder that reconnects on the same timeline after a 3 s outage, and one that starts over.
    // (At 18 s the continuing timeline is at 8 s; one starting over at 40 s is 30 s off.)
    for (name, first, wall) in [("continuing", 40u64, 18.0), ("starting over", 0, 40.0)] {
        let (mut a, mut b) = (original.clone(), restored.clone());
        for channel in [&mut a, &mut b] {
            assert!(!channel.track_started("video", &init), "{name}: the same track");
        }
        for i in first..first + 10 {
            let c = chunk(i * fifth, fifth, i % 5 == 0);
            let now = at(wall + (i - first) as f64 / 5.0);
            assert_eq!(
                a.place("video", &c, 1000, now),
                b.place("video", &c, 1000, now),
                "{name}: chunk {i}"
            );
        }
        assert_eq!(a.manifest(at(wall + 3.0)), b.manifest(at(wall + 3.0)), "{name}");
        assert_eq!(a.current_run(), if first == 0 { 1 } else { 0 }, "{name}");
    }
}

#[test]
fn a_manifest_the_packager_did_not_write_or_a_different_segment_duration_is_not_restored() {
    let (original, stored, _) = stored_channel(3);
    let text = original.manifest(at(13.0)).expect("a manifest");
    let mpd = crate::media::mpd::parse(text.as_bytes()).expect("it parses");
    let other = PackageOptions {
        segment_duration: Duration::from_secs(2),
        window: 3,
    };
    assert!(
        Channel::restored(other, &mpd, &stored).is_none(),
        "another segment duration"
    );
    assert!(
        Channel::restored(original.options, &mpd, &Stored::default()).is_none(),
        "no init segment"
    );
    let ended = original.final_manifest(at(13.0)).expect("a final manifest");
    let mpd = crate::media::mpd::parse(ended.as_bytes()).expect("it parses");
    assert!(
        Channel::restored(original.options, &mpd, &stored).is_none(),
        "an ended channel"
    );
}

#[test]
fn stored_names_give_their_track_number_and_run() {
    for (id, number, run) in [("video", 7, 0), ("video_hi", 123456, 3), ("a-b", 1, 12)] {
        assert_eq!(
            parse_segment_name(&segment_name(id, number, run)),
            Some((id, number, run))
        );
        assert_eq!(parse_init_name(&init_name(id, run)), Some((id, run)));
    }
    for other in [
        "stream.mpd",
        "chunk-.m4s",
        "chunk-video-.m4s",
        "chunk-video-x1.m4s",
        "init-.m4s",
        "chunk-stream0-00001.mp4",
    ] {
        assert_eq!(parse_segment_name(other), None, "{other}");
    }
    assert_eq!(parse_init_name("init-stream0.m4s"), Some(("stream0", 0)));
}
