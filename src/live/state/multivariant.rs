//! The multivariant playlist of a stream: its video representations as variants with the audio
//! as a group (or, audio only, the audio as the variants), codecs completed from init segments.

use std::collections::HashMap;

use super::playlists::{is_audio, media_name, reps};
use super::State;
use crate::media::hls::{self, Audio, Variant};
use crate::media::mpd::{completed_codecs, Mpd, Representation};
use crate::store::StorePath;

impl State {
    /// The multivariant playlist of the manifest `mpd` stored at `mpd_path`, with the codecs its
    /// init segments complete.
    pub fn multivariant(&self, mpd_path: &StorePath, mpd: &Mpd) -> String {
        let init_codecs: HashMap<String, String> = self
            .observe(mpd_path.folder(), mpd)
            .into_iter()
            .filter_map(|((_, _, rep), seen)| Some((rep, seen.codecs?)))
            .collect();
        multivariant_of(mpd, mpd_path.name(), &init_codecs)
    }
}

/// "30/1", "30000/1001" or "25" as frames per second.
fn frame_rate(text: &str) -> Option<f64> {
    match text.split_once('/') {
        Some((n, d)) => {
            let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
            (d > 0.0).then_some(n / d)
        }
        None => text.parse().ok(),
    }
}

/// A representation's codecs: the MPD's, completed from its init segment's (`init_codecs`, by
/// representation id) where the MPD names the sample entry alone.
fn codecs_of(rep: &Representation, init_codecs: &HashMap<String, String>) -> Option<String> {
    let declared = rep.codecs.as_deref()?;
    let full = completed_codecs(declared, init_codecs.get(&rep.id).map(String::as_str));
    Some(full.unwrap_or(declared).to_owned())
}

/// The multivariant playlist of an MPD: a variant per video representation with the audio as a
/// group, or, for an audio-only stream, the audio representations as the variants.
pub(super) fn multivariant_of(mpd: &Mpd, mpd_name: &str, init_codecs: &HashMap<String, String>) -> String {
    let audio: Vec<(&Representation, Audio)> = reps(mpd)
        .filter(|(kind, rep)| is_audio(*kind, rep))
        .map(|(_, rep)| {
            let audio = Audio {
                uri: media_name(mpd_name, rep),
                name: rep.id.clone(),
                language: None,
                channels: rep.audio_channels.clone(),
            };
            (rep, audio)
        })
        .collect();
    let audio_bandwidth = audio.iter().filter_map(|(rep, _)| rep.bandwidth).max().unwrap_or(0);
    let audio_codecs = audio.first().and_then(|(rep, _)| codecs_of(rep, init_codecs));
    let mut variants: Vec<Variant> = reps(mpd)
        .filter(|(kind, rep)| !is_audio(*kind, rep))
        .map(|(_, rep)| Variant {
            uri: media_name(mpd_name, rep),
            bandwidth: rep.bandwidth.unwrap_or(1_000_000) + audio_bandwidth,
            codecs: [codecs_of(rep, init_codecs), audio_codecs.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(","),
            resolution: rep.width.zip(rep.height),
            frame_rate: rep.frame_rate.as_deref().and_then(frame_rate),
        })
        .collect();
    let audio: Vec<Audio> = audio.into_iter().map(|(_, a)| a).collect();
    if variants.is_empty() {
        // Audio only: the audio renditions are the variants.
        variants = reps(mpd)
            .map(|(_, rep)| Variant {
                uri: media_name(mpd_name, rep),
                bandwidth: rep.bandwidth.unwrap_or(128_000),
                codecs: codecs_of(rep, init_codecs).unwrap_or_default(),
                resolution: None,
                frame_rate: None,
            })
            .collect();
        return hls::multivariant(&variants, &[]);
    }
    hls::multivariant(&variants, &audio)
}
