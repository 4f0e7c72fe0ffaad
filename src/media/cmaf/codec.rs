//! What a track's sample entry (`stsd`) says about its coding: the RFC 6381 `codecs` string DASH
//! and HLS advertise, the picture size of video and the sample rate and channels of audio. Read from
//! an init segment by [`super::parse_init`], for the manifests ldash writes itself (CMAF ingest).

use super::boxes::{be32, children};
use super::CmafError;

/// The coding of one track, from its first sample entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coding {
    /// The RFC 6381 codecs string (`avc1.64001f`, `hvc1.1.6.L93.B0`, `mp4a.40.2`, `Opus`...); the
    /// sample entry's four characters when its configuration box is missing or unknown.
    pub codecs: String,
    /// Picture width and height of a visual sample entry.
    pub size: Option<(u32, u32)>,
    /// Sample rate (Hz) of an audio sample entry.
    pub sample_rate: Option<u32>,
    /// Channel count of an audio sample entry.
    pub channels: Option<u16>,
    /// Average bits per second from a `btrt` box, when the encoder wrote a non-zero one.
    pub bitrate: Option<u64>,
}

/// Bytes of a SampleEntry before a VisualSampleEntry's or AudioSampleEntry's own fields.
const SAMPLE_ENTRY: usize = 8;
/// Bytes of a VisualSampleEntry before its child boxes.
const VISUAL_ENTRY: usize = 78;
/// Bytes of an AudioSampleEntry before its child boxes.
const AUDIO_ENTRY: usize = 28;

/// The coding described by an `stsd` box payload (its first sample entry).
pub(super) fn parse_stsd(stsd: &[u8]) -> Result<Option<Coding>, CmafError> {
    // FullBox header (4) and entry_count (4), then the sample entries.
    let entries = stsd.get(8..).ok_or(CmafError::Malformed("stsd"))?;
    let Some(first) = children(entries).next() else {
        return Ok(None);
    };
    let (kind, entry) = first?;
    Ok(Some(sample_entry(kind, entry)))
}

fn sample_entry(kind: [u8; 4], entry: &[u8]) -> Coding {
    let fourcc = String::from_utf8_lossy(&kind).into_owned();
    match &kind {
        b"avc1" | b"avc3" | b"hvc1" | b"hev1" | b"av01" | b"vp09" => visual(&fourcc, entry),
        b"mp4a" | b"Opus" | b"ac-3" | b"ec-3" | b"fLaC" => audio(&fourcc, entry),
        _ => Coding {
            codecs: fourcc,
            ..Coding::default()
        },
    }
}

fn visual(fourcc: &str, entry: &[u8]) -> Coding {
    let size = entry.get(SAMPLE_ENTRY + 16..SAMPLE_ENTRY + 20).map(|b| {
        (
            u32::from(u16::from_be_bytes([b[0], b[1]])),
            u32::from(u16::from_be_bytes([b[2], b[3]])),
        )
    });
    let boxes = entry.get(VISUAL_ENTRY..).unwrap_or_default();
    let mut coding = Coding {
        codecs: fourcc.to_owned(),
        size,
        ..Coding::default()
    };
    for (kind, body) in children(boxes).map_while(Result::ok) {
        match &kind {
            b"avcC" => {
                if let Some(b) = body.get(1..4) {
                    coding.codecs = format!("{fourcc}.{:02x}{:02x}{:02x}", b[0], b[1], b[2]);
                }
            }
            b"hvcC" => {
                if let Some(codecs) = hevc(fourcc, body) {
                    coding.codecs = codecs;
                }
            }
            b"btrt" => coding.bitrate = bitrate(body),
            _ => {}
        }
    }
    coding
}

/// ISO/IEC 14496-15 annex E: `hvc1.{space}{profile}.{compatibility}.{tier}{level}.{constraints}`.
fn hevc(fourcc: &str, hvcc: &[u8]) -> Option<String> {
    let first = *hvcc.get(1)?;
    let space = ["", "A", "B", "C"][usize::from(first >> 6)];
    let tier = if first & 0x20 != 0 { 'H' } else { 'L' };
    let profile = first & 0x1f;
    // The compatibility flags, written with their bits in reverse order.
    let compatibility = u32::from_be_bytes(hvcc.get(2..6)?.try_into().ok()?).reverse_bits();
    let constraints = hvcc.get(6..12)?;
    let level = *hvcc.get(12)?;
    let mut codecs = format!("{fourcc}.{space}{profile}.{compatibility:x}.{tier}{level}");
    // Constraint bytes up to the last non-zero one.
    let kept = constraints.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    for byte in &constraints[..kept] {
        codecs.push_str(&format!(".{byte:X}"));
    }
    Some(codecs)
}

fn audio(fourcc: &str, entry: &[u8]) -> Coding {
    let channels = entry
        .get(SAMPLE_ENTRY + 8..SAMPLE_ENTRY + 10)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    // samplerate is 16.16 fixed point.
    let sample_rate = entry
        .get(SAMPLE_ENTRY + 16..SAMPLE_ENTRY + 18)
        .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])));
    let boxes = entry.get(AUDIO_ENTRY..).unwrap_or_default();
    let mut coding = Coding {
        // RFC 6381 / the codecs registry: `opus` and `flac` in lower case.
        codecs: match fourcc {
            "fLaC" => "flac".to_owned(),
            "Opus" => "opus".to_owned(),
            other => other.to_owned(),
        },
        channels,
        sample_rate,
        ..Coding::default()
    };
    for (kind, body) in children(boxes).map_while(Result::ok) {
        match &kind {
            b"esds" if fourcc == "mp4a" => {
                if let Some(codecs) = mpeg4_audio(body) {
                    coding.codecs = codecs;
                }
            }
            b"dOps" => {
                if let Some(&count) = body.get(1) {
                    coding.channels = Some(u16::from(count));
                }
            }
            b"btrt" => coding.bitrate = bitrate(body),
            _ => {}
        }
    }
    coding
}

/// `mp4a.{objectTypeIndication:x}.{audioObjectType}` from an `esds` box (ISO/IEC 14496-1 descriptors).
fn mpeg4_audio(esds: &[u8]) -> Option<String> {
    // FullBox header, then an ES_Descriptor (tag 3).
    let (tag, es) = descriptor(esds.get(4..)?)?;
    if tag != 3 {
        return None;
    }
    let flags = *es.get(2)?;
    let mut at = 3;
    if flags & 0x80 != 0 {
        at += 2; // dependsOn_ES_ID
    }
    if flags & 0x40 != 0 {
        at += 1 + usize::from(*es.get(at)?); // URL
    }
    if flags & 0x20 != 0 {
        at += 2; // OCR_ES_Id
    }
    let (tag, config) = descriptor(es.get(at..)?)?;
    if tag != 4 {
        return None;
    }
    let object_type = *config.first()?;
    // DecoderSpecificInfo (tag 5) after the 13 bytes of DecoderConfigDescriptor fields.
    let audio_object_type = descriptor(config.get(13..)?)
        .filter(|(tag, _)| *tag == 5)
        .and_then(|(_, info)| {
            let kind = info.first()? >> 3;
            if kind == 31 {
                // An escape: 6 more bits follow.
                let extended = (u16::from(*info.first()? & 0x07) << 3) | u16::from(*info.get(1)? >> 5);
                Some(32 + extended)
            } else {
                Some(u16::from(kind))
            }
        });
    Some(match audio_object_type {
        Some(kind) => format!("mp4a.{object_type:x}.{kind}"),
        None => format!("mp4a.{object_type:x}"),
    })
}

/// One descriptor: its tag and payload (the size is 1 to 4 bytes of 7 bits each).
fn descriptor(data: &[u8]) -> Option<(u8, &[u8])> {
    let tag = *data.first()?;
    let mut size = 0usize;
    let mut at = 1;
    loop {
        let byte = *data.get(at)?;
        at += 1;
        size = (size << 7) | usize::from(byte & 0x7f);
        if byte & 0x80 == 0 || at == 5 {
            break;
        }
    }
    Some((tag, data.get(at..at.checked_add(size)?)?))
}

/// avgBitrate of a `btrt` box (bufferSizeDB, maxBitrate, avgBitrate), when non-zero.
fn bitrate(btrt: &[u8]) -> Option<u64> {
    be32(btrt, 8, "btrt").ok().filter(|b| *b > 0).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hevc_main_profile_level_3_1() {
        let mut hvcc = vec![1u8, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        hvcc.extend_from_slice(&[0; 10]);
        assert_eq!(hevc("hvc1", &hvcc).as_deref(), Some("hvc1.1.6.L93.90"));
    }

    #[test]
    fn aac_low_complexity_from_esds() {
        // ES_Descriptor(ES_ID 1, no flags) > DecoderConfigDescriptor(0x40, ...) > DecoderSpecificInfo(0x11 0x90).
        let dsi = [5u8, 2, 0x11, 0x90];
        let mut config = vec![0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        config.extend_from_slice(&dsi);
        let mut es = vec![0u8, 1, 0, 4, config.len() as u8];
        es.extend_from_slice(&config);
        let mut esds = vec![0u8, 0, 0, 0, 3, es.len() as u8];
        esds.extend_from_slice(&es);
        assert_eq!(mpeg4_audio(&esds).as_deref(), Some("mp4a.40.2"));
    }

    #[test]
    fn truncated_entries_give_what_they_hold_without_panicking() {
        for len in 0..40 {
            let entry = vec![0u8; len];
            let coding = sample_entry(*b"avc1", &entry);
            assert_eq!(coding.codecs, "avc1");
            let coding = sample_entry(*b"mp4a", &entry);
            assert_eq!(coding.codecs, "mp4a");
        }
        assert_eq!(mpeg4_audio(&[0, 0, 0, 0, 3, 0x80]), None);
    }
}
