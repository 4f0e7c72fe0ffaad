//! The rewrite's rules, and the splice against the streaming rewriter it replaced.

use super::*;
use crate::media::mpd::parse;

const FIRST: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/first.mpd");
const STEADY: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/steady.mpd");
const FINAL: &[u8] = include_bytes!("../../../../tests/fixtures/ffmpeg/final.mpd");

fn service() -> ServiceDefaults {
    ServiceDefaults {
        latency: Some(Latency::UNOBSERVED),
        playback_rate_min: 0.92,
        playback_rate_max: 1.08,
    }
}

fn chunked() -> HashMap<(usize, usize, String), Observed> {
    let seen = Observed {
        chunk_duration: Some(Duration::from_millis(200)),
        chunked: true,
        bandwidth: Some(434_000),
        codecs: None,
    };
    [((0, 0, "0".to_string()), seen.clone()), ((0, 1, "1".to_string()), seen)]
        .into_iter()
        .collect()
}

fn run(mpd: &[u8], observed: &HashMap<(usize, usize, String), Observed>) -> String {
    let service = service();
    let r = Rewrite {
        clock_url: "https://example.com:8443/ldash/time",
        service: &service,
        observed,
        ended: None,
        time_shift: None,
    };
    String::from_utf8(rewrite(mpd, &r).expect("rewrite").into_owned()).expect("utf-8")
}

#[test]
fn an_ended_live_stream_gets_its_presentation_duration() {
    let service = service();
    let observed = chunked();
    let r = Rewrite {
        clock_url: "x",
        service: &service,
        observed: &observed,
        ended: Some(Duration::from_millis(12_400)),
        time_shift: None,
    };
    let out = String::from_utf8(rewrite(STEADY, &r).expect("rewrite").into_owned()).expect("utf-8");
    assert!(out.contains("mediaPresentationDuration=\"PT12.4S\""), "{out}");
    assert!(out.contains("type=\"dynamic\""), "it stays a live MPD: {out}");
    assert!(
        matches!(rewrite(FINAL, &r), Ok(Cow::Borrowed(_))),
        "a static MPD is left as it is"
    );
}

#[test]
fn a_dvr_window_lengthens_the_time_shift_buffer_and_never_shortens_it() {
    let service = service();
    let observed = chunked();
    let with = |time_shift: Option<Duration>, mpd: &[u8]| {
        let r = Rewrite {
            clock_url: "https://example.com:8443/ldash/time",
            service: &service,
            observed: &observed,
            ended: None,
            time_shift,
        };
        String::from_utf8(rewrite(mpd, &r).expect("rewrite").into_owned()).expect("utf-8")
    };
    // ffmpeg's window says PT10.0S.
    let out = with(Some(Duration::from_secs(3600)), STEADY);
    assert!(out.contains("timeShiftBufferDepth=\"PT3600S\""), "{out}");
    assert_eq!(
        out.matches("timeShiftBufferDepth").count(),
        1,
        "replaced, not added: {out}"
    );
    let out = with(Some(Duration::from_secs(4)), STEADY);
    assert!(
        out.contains("timeShiftBufferDepth=\"PT10.0S\""),
        "the encoder's is longer: {out}"
    );
    assert_eq!(with(None, STEADY), run(STEADY, &observed), "no window: as before");
    // A missing depth is repaired (ten segments) unless the window reaches further.
    let bare = String::from_utf8_lossy(STEADY).replace("timeShiftBufferDepth=\"PT10.0S\"", "");
    let out = with(Some(Duration::from_secs(5)), bare.as_bytes());
    assert!(out.contains("timeShiftBufferDepth=\"PT10S\""), "{out}");
    let out = with(Some(Duration::from_secs(95)), bare.as_bytes());
    assert!(out.contains("timeShiftBufferDepth=\"PT95S\""), "{out}");
    assert_eq!(out.matches("timeShiftBufferDepth").count(), 1, "{out}");
    let out = with(Some(Duration::from_secs(3600)), FINAL);
    assert!(!out.contains("PT3600S"), "a static MPD has no time-shift buffer: {out}");
}

#[test]
fn first_ffmpeg_mpd_is_rewritten_for_low_latency() {
    let out = run(FIRST, &chunked());
    assert!(out.contains("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"https://example.com:8443/ldash/time\"/>"), "{out}");
    assert!(
        out.contains("<Latency target=\"1500\" min=\"1000\" max=\"3000\"/><PlaybackRate min=\"0.92\" max=\"1.08\"/>"),
        "{out}"
    );
    assert!(
        out.contains("bandwidth=\"434000\""),
        "a measured bandwidth where ffmpeg wrote none: {out}"
    );
    assert!(out.contains("minimumUpdatePeriod=\"PT1S\""), "{out}");
    assert!(out.contains("timeShiftBufferDepth=\"PT10S\""), "{out}");
    assert!(out.contains("minBufferTime=\"PT1S\""), "{out}");
    assert!(
        out.contains("availabilityTimeOffset=\"0.800\" availabilityTimeComplete=\"false\""),
        "{out}"
    );
    assert_eq!(
        out.matches("availabilityTimeOffset=\"0.800\"").count(),
        2,
        "ffmpeg's own ATO kept, ours added: {out}"
    );
    let again = parse(out.as_bytes()).expect("the rewrite parses");
    assert!(again.dynamic);
    assert_eq!(run(out.as_bytes(), &chunked()), out, "rewriting twice is stable");
}

#[test]
fn without_chunked_ingest_no_ato_is_invented() {
    let out = run(FIRST, &HashMap::new());
    assert_eq!(
        out.matches("availabilityTimeOffset").count(),
        1,
        "only ffmpeg's own: {out}"
    );
    assert!(
        out.contains("bandwidth=\"1000000\""),
        "a placeholder keeps the schema happy: {out}"
    );
}

#[test]
fn static_mpd_is_left_as_it_is() {
    assert_eq!(run(FINAL, &chunked()).as_bytes(), FINAL);
    let service = service();
    let observed = chunked();
    let r = Rewrite {
        clock_url: "x",
        service: &service,
        observed: &observed,
        ended: None,
        time_shift: None,
    };
    assert!(
        matches!(rewrite(FINAL, &r), Ok(Cow::Borrowed(_))),
        "nothing to repair: the same bytes"
    );
}

#[test]
fn existing_utc_timing_and_service_description_are_handled() {
    let mpd = br#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-live:2011"><ServiceDescription id="1"><Latency target="900"/></ServiceDescription><Period id="p"><AdaptationSet><SegmentTemplate duration="2" media="$Number$.m4s"/><Representation id="a" bandwidth="1"/></AdaptationSet></Period><UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="x"/><UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="y"></UTCTiming></MPD>"#;
    let out = run(mpd, &HashMap::new());
    assert_eq!(out.matches("<UTCTiming").count(), 1, "{out}");
    assert!(
        out.contains("<Latency target=\"900\"/>") && !out.contains("1500"),
        "an existing Latency is kept: {out}"
    );
    assert!(out.ends_with("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"https://example.com:8443/ldash/time\"/></MPD>"), "{out}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for bad in [
        &b""[..],
        b"not xml",
        b"<MPD",
        b"<Period/>",
        b"<MPD><Period></MPD>",
        b"<?xml version=\"1.0\"?>",
        b"<MPD a=\"1\" a=\"2\"/>",
    ] {
        assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        let service = service();
        let observed = HashMap::new();
        let r = Rewrite {
            clock_url: "x",
            service: &service,
            observed: &observed,
            ended: None,
            time_shift: None,
        };
        assert!(rewrite(bad, &r).is_err(), "{:?}", String::from_utf8_lossy(bad));
    }
    for cut in 0..FIRST.len() {
        let _ = parse(&FIRST[..cut]);
    }
}

#[test]
fn the_latency_target_follows_the_observed_chunk_duration() {
    let derived = ServiceDefaults {
        latency: None,
        ..service()
    };
    let text = |observed: &HashMap<(usize, usize, String), Observed>| {
        let r = Rewrite {
            clock_url: "x",
            service: &derived,
            observed,
            ended: None,
            time_shift: None,
        };
        String::from_utf8(rewrite(STEADY, &r).expect("rewrite").into_owned()).expect("utf-8")
    };
    // 0.2 s chunks: four chunks and 200 ms.
    let out = text(&chunked());
    assert!(
        out.contains("<Latency target=\"1000\" min=\"500\" max=\"3000\"/>"),
        "{out}"
    );
    let out = text(&HashMap::new());
    assert!(
        out.contains("<Latency target=\"1500\" min=\"1000\" max=\"3000\"/>"),
        "{out}"
    );
    assert_eq!(
        Latency::for_chunk(Duration::from_millis(100)),
        Latency {
            target: Duration::from_millis(600),
            min: Duration::from_millis(300),
            max: Duration::from_millis(1800)
        }
    );
}

/// The requests the comparison with the streaming rewriter tries on an MPD: no observations, every
/// representation chunked, a mix (some chunked with no measured bandwidth, some not chunked), and
/// chunks longer than segments; with a fixed or a derived latency; live or ended; and a clock URL
/// that needs escaping.
fn requests(model: Option<&Mpd>) -> Vec<Request> {
    let mut everywhere = HashMap::new();
    let mut mixed = HashMap::new();
    let mut long = HashMap::new();
    let reps = model
        .into_iter()
        .flat_map(|m| m.periods.iter().enumerate())
        .flat_map(|(p, period)| {
            period
                .adaptation_sets
                .iter()
                .enumerate()
                .flat_map(move |(a, set)| set.representations.iter().map(move |r| (p, a, r.id.clone())))
        });
    for (i, key) in reps.enumerate() {
        let seen = |ms: u64, chunked: bool, bandwidth: Option<u64>| Observed {
            chunk_duration: Some(Duration::from_millis(ms)),
            chunked,
            bandwidth,
            codecs: None,
        };
        everywhere.insert(key.clone(), seen(200, true, Some(500_000)));
        mixed.insert(
            key.clone(),
            seen(100 + 50 * i as u64, i % 2 == 0, (i % 3 == 1).then_some(0)),
        );
        long.insert(key, seen(5_000, true, None));
    }
    let derived = ServiceDefaults {
        latency: None,
        ..service()
    };
    let request = |observed, service, ended| Request {
        observed,
        service,
        ended,
    };
    vec![
        request(HashMap::new(), service(), None),
        request(everywhere.clone(), service(), None),
        request(everywhere, derived.clone(), Some(Duration::from_millis(12_400))),
        request(mixed.clone(), derived, None),
        request(mixed, service(), Some(Duration::from_secs(3600))),
        request(long, service(), None),
    ]
}

/// What a GET brings to a rewrite, owned.
struct Request {
    observed: HashMap<(usize, usize, String), Observed>,
    service: ServiceDefaults,
    ended: Option<Duration>,
}

/// Asserts that splicing `mpd` gives what the streaming rewriter gave, for every request.
fn splices_as_streaming(name: &str, mpd: &[u8]) {
    let model = parse(mpd);
    for (i, request) in requests(model.as_ref().ok()).iter().enumerate() {
        let r = Rewrite {
            clock_url: "https://origin.example:8443/ldash/time?a=1&b=\"<x>\"",
            service: &request.service,
            observed: &request.observed,
            ended: request.ended,
            time_shift: None,
        };
        let old = streaming::rewrite(mpd, &r);
        let new = match &model {
            Ok(model) => model.rewrite(mpd, &r),
            Err(err) => Err(err.clone()),
        };
        let text = |out: &Result<Cow<'_, [u8]>, MpdError>| match out {
            Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Err(err) => format!("error: {err}"),
        };
        assert_eq!(
            text(&new),
            text(&old),
            "{name}, request {i}: the splice differs from the streaming rewriter"
        );
        assert_eq!(new, old, "{name}, request {i}: the same bytes");
        assert_eq!(
            matches!(new, Ok(Cow::Borrowed(_))),
            matches!(old, Ok(Cow::Borrowed(_))),
            "{name}, request {i}: unchanged MPDs are served as they are"
        );
    }
}

#[test]
fn splicing_writes_what_the_streaming_rewriter_wrote_for_ffmpeg_and_the_corpus() {
    splices_as_streaming("first.mpd", FIRST);
    splices_as_streaming("steady.mpd", STEADY);
    splices_as_streaming("final.mpd", FINAL);
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/dash/examples");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("the corpus of valid MPDs is expected at {}: {e}", corpus.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mpd"))
        .collect();
    files.sort();
    for file in &files {
        let mpd = std::fs::read(file).expect("read mpd");
        splices_as_streaming(&file.display().to_string(), &mpd);
    }
    assert!(files.len() >= 30, "the corpus was read ({} files)", files.len());
}

/// MPDs that take the rewrite's rarer paths: ServiceDescriptions with and without Latency, empty
/// or holding a Scope; UTCTimings empty, nested and before the Periods; LeapSecondInformation; an
/// empty root; prefixes, single quotes, entities and line breaks inside tags; markup quick-xml's
/// writer spells differently (a byte order mark, `</a >`, `<!DOCTYPE  a>`); more than one root.
const EDGES: &[&str] = &[
    r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-live:2011"><ServiceDescription id="1"><Latency target="900"/></ServiceDescription><Period id="p"><AdaptationSet><SegmentTemplate duration="2" media="$Number$.m4s"/><Representation id="a" bandwidth="1"/></AdaptationSet></Period><UTCTiming schemeIdUri="urn:mpeg:dash:utc:direct:2014" value="x"/><UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-xsdate:2014" value="y"></UTCTiming></MPD>"#,
    "<MPD type=\"dynamic\">\n  <ServiceDescription id=\"3\" />\n  <Period><AdaptationSet><Representation id=\"0\"><SegmentTemplate duration=\"2\" media=\"$Number$.m4s\"/></Representation></AdaptationSet></Period>\n</MPD>\n",
    "<MPD type=\"dynamic\"><ServiceDescription id=\"1\"> <Scope schemeIdUri=\"s\"/> <!-- c --> <PlaybackRate min=\"0.9\" max=\"1.1\"/></ServiceDescription><ServiceDescription id=\"2\"><Scope schemeIdUri=\"t\"/></ServiceDescription><ServiceDescription/><Period/></MPD>",
    "<MPD type=\"dynamic\"><ServiceDescription id=\"1\"><Scope schemeIdUri=\"s\"/></ServiceDescription><ServiceDescription id=\"2\"><Latency target=\"1\"/></ServiceDescription></MPD>",
    "<MPD type=\"dynamic\"><ServiceDescription id=\"1\"><Other><Latency target=\"1\"/></Other></ServiceDescription><ServiceDescription id=\"2\"></ServiceDescription></MPD>",
    "<MPD type=\"dynamic\"><ServiceDescription id=\"1\"/><Period><Latency target=\"1\"/></Period></MPD>",
    "<MPD type=\"dynamic\"><ProgramInformation/><BaseURL>b/</BaseURL><UTCTiming schemeIdUri=\"a\" value=\"b\">text<!-- c --><X><Y/></X></UTCTiming><Location>l</Location><LeapSecondInformation availabilityStartLeapOffset=\"37\"/><Period><AdaptationSet mimeType=\"video/mp4\"><SegmentTemplate timescale=\"10\" duration=\"20\" availabilityTimeOffset=\"1\"/><Representation id=\"v\"/><Representation id=\"w\" bandwidth=\"9\"><SegmentTemplate availabilityTimeComplete=\"true\"/></Representation></AdaptationSet></Period><LeapSecondInformation availabilityStartLeapOffset=\"38\"/></MPD>",
    "<MPD type=\"dynamic\" minBufferTime=\"PT0S\" minimumUpdatePeriod=\"PT31S\"/>",
    "<MPD type=\"static\"><Period><AdaptationSet><Representation id=\"nobandwidth\"/></AdaptationSet></Period></MPD>",
    "<MPD type=\"static\"><Period></Period  ></MPD >",
    "\u{feff}<?xml version=\"1.0\"?>\n<!DOCTYPE  MPD>\n<MPD type=\"dynamic\"\n\tminimumUpdatePeriod=\"PT100S\"   timeShiftBufferDepth=\"PT0S\" >\r\n<Period\n id=\"0\"><AdaptationSet><Representation id=\"0\" ><SegmentTemplate\n duration=\"1\" media=\"$Number$\" /></Representation\n></AdaptationSet\t></Period ></MPD  >\r\n",
    "<dash:MPD xmlns:dash=\"urn:mpeg:dash:schema:mpd:2011\" type=\"dynamic\"><dash:UTCTiming/><dash:Period><dash:AdaptationSet><dash:SegmentTemplate duration=\"2\" media=\"$Number$.m4s\"/><dash:Representation id=\"0\" dash:bandwidth=\"5\"/></dash:AdaptationSet></dash:Period></dash:MPD>",
    "<MPD type='dynamic' profiles='a&amp;b \"q\"' minimumUpdatePeriod=\"PT100S\"><Period><AdaptationSet><Representation id='r&lt;1' codecs='avc1' ><SegmentTemplate duration='1' media='$Number$'/></Representation></AdaptationSet></Period></MPD>",
    "<MPD type=\"dynamic\"><UTCTiming><MPD><Period/></MPD></UTCTiming><Period><AdaptationSet><SegmentTemplate duration=\"2\" media=\"$Number$\"/><Representation id=\"0\"/></AdaptationSet></Period><Period><AdaptationSet/><AdaptationSet><Representation id=\"0\"><SegmentTemplate duration=\"4\"/></Representation></AdaptationSet></Period></MPD>",
    "<MPD type=\"dynamic\"><Period><AdaptationSet><Representation id=\"a\"><Foo><Representation><SegmentTemplate duration=\"1\" media=\"x$Number$\"/></Representation></Foo><SegmentTemplate duration=\"1\"/></Representation></AdaptationSet></Period></MPD>",
    "<MPD type=\"dynamic\"><Period><SegmentTemplate duration=\"3\" availabilityTimeOffset=\"0.5\"/><AdaptationSet><Representation id=\"0\"/><Representation id=\"1\"/></AdaptationSet></Period></MPD>",
    "<?xml version=\"1.0\" standalone=\"yes\"?><?pi x?><!-- head --><MPD type=\"dynamic\"><![CDATA[<x>]]>&amp;&#x20;<Period/><!-- tail --></MPD><!-- after -->",
    "<MPD type=\"static\"><Period/></MPD><MPD type=\"dynamic\"><UTCTiming/><Period><AdaptationSet><Representation id=\"0\"><SegmentTemplate duration=\"1\"/></Representation></AdaptationSet></Period></MPD>",
    "<MPD type=\"dynamic\"><UTCTiming/><Period><AdaptationSet><Representation id=\"0\"><SegmentTemplate duration=\"1\"/></Representation></AdaptationSet></Period></MPD><MPD type=\"static\"/>",
];

#[test]
fn splicing_writes_what_the_streaming_rewriter_wrote_on_the_rare_paths() {
    for (i, mpd) in EDGES.iter().enumerate() {
        assert!(parse(mpd.as_bytes()).is_ok(), "edge {i} parses: {mpd}");
        splices_as_streaming(&format!("edge {i}"), mpd.as_bytes());
    }
}

/// One MPD per combination of the children the rewrite places things around.
fn combination(bits: u32) -> String {
    let on = |bit: u32| bits & (1 << bit) != 0;
    let mut mpd = format!(
        "<MPD type=\"{}\" minBufferTime=\"PT{}S\">",
        if on(0) { "dynamic" } else { "static" },
        if on(1) { 0 } else { 2 }
    );
    if on(2) {
        mpd += "<ProgramInformation/>";
    }
    mpd += match (on(3), on(4)) {
        (false, false) => "",
        (true, false) => "<ServiceDescription/>",
        (false, true) => "<ServiceDescription><Scope schemeIdUri=\"s\"/></ServiceDescription>",
        (true, true) => "<ServiceDescription><Latency target=\"800\"/></ServiceDescription>",
    };
    if on(5) {
        mpd += "<UTCTiming schemeIdUri=\"x\" value=\"y\"><Z/></UTCTiming>";
    }
    let template = format!(
        "<SegmentTemplate duration=\"2\" media=\"$Number$.m4s\"{}{}/>",
        if on(6) { " availabilityTimeOffset=\"1.5\"" } else { "" },
        if on(7) {
            " availabilityTimeComplete=\"false\""
        } else {
            ""
        }
    );
    let (at_set, at_rep) = if on(8) {
        (template.as_str(), "")
    } else {
        ("", template.as_str())
    };
    let bandwidth = if on(9) { " bandwidth=\"7\"" } else { "" };
    mpd += &format!(
        "<Period><AdaptationSet>{at_set}<Representation id=\"0\"{bandwidth}>{at_rep}</Representation><Representation id=\"1\">{at_rep}</Representation></AdaptationSet></Period>"
    );
    if on(10) {
        mpd += "<LeapSecondInformation availabilityStartLeapOffset=\"37\"/>";
    }
    mpd + "</MPD>"
}

#[test]
fn splicing_writes_what_the_streaming_rewriter_wrote_for_every_combination() {
    for bits in 0..1 << 11 {
        splices_as_streaming(&combination(bits), combination(bits).as_bytes());
    }
}

#[test]
fn a_get_splices_recorded_positions_without_reading_the_xml_again() {
    let model = parse(FIRST).expect("parse");
    let service = service();
    let observed = chunked();
    let r = Rewrite {
        clock_url: "https://example.com:8443/ldash/time",
        service: &service,
        observed: &observed,
        ended: None,
        time_shift: None,
    };
    let expected = String::from_utf8(model.rewrite(FIRST, &r).expect("rewrite").into_owned()).expect("utf-8");
    // Bytes no edit touches, made into something no XML reader accepts.
    let text = String::from_utf8(FIRST.to_vec()).expect("utf-8");
    let (kept, broken) = ("<Resync dT=\"200000\" type=\"0\"/>", "<<<<<<<<<<<&&&&&&&&&&>>>>>>>>>");
    assert_eq!(kept.len(), broken.len());
    let mangled = text.replacen(kept, broken, 1);
    assert!(parse(mangled.as_bytes()).is_err(), "the mangled MPD is not XML");
    let out = model.rewrite(mangled.as_bytes(), &r).expect("the splice reads no XML");
    assert_eq!(
        String::from_utf8_lossy(&out),
        expected.replacen(kept, broken, 1),
        "the GET copied the bytes between the positions recorded at parse time"
    );
}

#[test]
fn bytes_other_than_the_parsed_ones_are_refused() {
    let service = service();
    let observed = chunked();
    let r = Rewrite {
        clock_url: "x",
        service: &service,
        observed: &observed,
        ended: None,
        time_shift: None,
    };
    let model = parse(FIRST).expect("parse");
    assert_eq!(model.rewrite(STEADY, &r), Err(MpdError::NotParsedFrom));
    assert_eq!(model.rewrite(b"", &r), Err(MpdError::NotParsedFrom));
    assert_eq!(Mpd::default().rewrite(b"", &r), Err(MpdError::NotParsedFrom));
    let mut ended = model.clone();
    ended.dynamic = false;
    assert_eq!(
        ended.rewrite(FIRST, &r),
        model.rewrite(FIRST, &r),
        "the edits were decided when the bytes were parsed"
    );
}

#[test]
fn a_codecs_string_without_its_parameters_is_completed_from_the_init_segment() {
    // ffmpeg's DASH muxer behind its tee muxer writes the sample entry's name alone.
    let mpd = br#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="2026-01-01T00:00:00Z" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0" start="PT0S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4">
      <Representation id="0" codecs="avc1" bandwidth="800000" width="640" height="360">
        <SegmentTemplate timescale="15360" duration="15360" startNumber="1" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s"/>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4">
      <Representation id="1" codecs="mp4a.40.2" bandwidth="64000" audioSamplingRate="48000">
        <SegmentTemplate timescale="48000" duration="48000" startNumber="1" initialization="init-$RepresentationID$.m4s" media="chunk-$RepresentationID$-$Number%05d$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
    let mut observed = chunked();
    for seen in observed.values_mut() {
        seen.codecs = Some("avc1.42c01e".into());
    }
    let out = run(mpd, &observed);
    assert!(out.contains(r#"codecs="avc1.42c01e""#), "{out}");
    // A complete one is left as the encoder wrote it, even where the init segment disagrees.
    assert!(out.contains(r#"codecs="mp4a.40.2""#), "{out}");
    // Nothing known of the init segment: as written.
    let out = run(mpd, &chunked());
    assert!(out.contains(r#"codecs="avc1""#), "{out}");
}

#[test]
fn only_a_bare_sample_entry_name_is_completed() {
    use crate::media::mpd::completed_codecs;
    assert_eq!(completed_codecs("avc1", Some("avc1.64001f")), Some("avc1.64001f"));
    assert_eq!(completed_codecs("mp4a", Some("mp4a.40.2")), Some("mp4a.40.2"));
    assert_eq!(completed_codecs("avc1.42c01e", Some("avc1.64001f")), None);
    assert_eq!(completed_codecs("avc1", Some("avc1")), None);
    assert_eq!(completed_codecs("avc1", Some("hvc1.1.6.L93.B0")), None);
    assert_eq!(completed_codecs("avc1", Some("avc1.")), None);
    assert_eq!(completed_codecs("Opus", Some("Opus.x")), None);
    assert_eq!(completed_codecs("avc1", None), None);
}
