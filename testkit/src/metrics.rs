//! A scrape of ldash's `GET /metrics` (the Prometheus text format), over a new HTTP/1.1 connection
//! of its own, parsed into samples by name with labels (`ldash_sent_bytes_total{version="2"}`).

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::raw::{raw_exchange, status_of};

/// One scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample by its name with labels.
    pub samples: HashMap<String, f64>,
    /// The response's Content-Type.
    pub content_type: String,
    /// The body as served, for messages.
    pub text: String,
}

impl Scrape {
    /// A sample's value, if the scrape has it.
    pub fn value(&self, sample: &str) -> Option<f64> {
        self.samples.get(sample).copied()
    }

    /// A sample's value; fails the caller, showing the whole scrape, when it is missing.
    pub fn get(&self, sample: &str) -> f64 {
        self.value(sample)
            .unwrap_or_else(|| panic!("no sample {sample} in the scrape:\n{}", self.text))
    }
}

/// Parses the samples of a Prometheus text body; a line that is neither a comment nor a sample is
/// an error.
pub fn parse(body: &str) -> Result<HashMap<String, f64>, String> {
    let mut samples = HashMap::new();
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("not a sample line: {line:?}"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().map_err(|_| format!("not a sample value in {line:?}"))?,
        };
        samples.insert(name.to_owned(), value);
    }
    Ok(samples)
}

/// Scrapes `GET /metrics` at `addr` (the metrics listener).
pub async fn scrape(addr: SocketAddr) -> Result<Scrape, String> {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let response = raw_exchange(addr, request.as_bytes(), "\u{0}never\u{0}")
        .await
        .map_err(|e| format!("scrape of {addr}: {e}"))?;
    if status_of(&response) != Some(200) {
        return Err(format!("scrape failed: {response}"));
    }
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Scrape {
        samples: parse(body)?,
        content_type,
        text: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn samples_keep_their_labels_and_infinite_buckets_parse() {
        let samples = parse(
            "# HELP x y\n# TYPE ldash_relay_delay_seconds histogram\n\
             ldash_relay_delay_seconds_bucket{le=\"+Inf\"} 3\nldash_entries 2\n# EOF\n",
        )
        .expect("a valid scrape");
        assert_eq!(samples["ldash_relay_delay_seconds_bucket{le=\"+Inf\"}"], 3.0);
        assert_eq!(samples["ldash_entries"], 2.0);
        assert_eq!(samples.len(), 2, "comments are not samples");
    }

    #[test]
    fn a_line_that_is_not_a_sample_is_an_error() {
        assert!(parse("ldash_entries\n").is_err());
        assert!(parse("ldash_entries many\n").is_err());
    }
}
