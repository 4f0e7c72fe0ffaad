//! The HTTP flavours ldash speaks, as a test table or a benchmark row names them.

/// One way of talking to ldash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 on the cleartext listener.
    H1,
    /// HTTP/2 with prior knowledge on the cleartext listener.
    H2c,
    /// HTTP/1.1 over TLS.
    H1Tls,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2Tls,
    /// HTTP/3 over QUIC.
    H3,
}

/// Every TCP flavour.
pub const TCP_PROTOS: [Proto; 4] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls];
/// Every protocol the server speaks.
pub const ALL_PROTOS: [Proto; 5] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls, Proto::H3];

impl Proto {
    /// The name a table prints.
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2c => "HTTP/2 (h2c)",
            Proto::H1Tls => "HTTP/1.1 (TLS)",
            Proto::H2Tls => "HTTP/2 (TLS)",
            Proto::H3 => "HTTP/3",
        }
    }

    /// The HTTP version a response over this flavour comes in.
    pub fn version(self) -> http::Version {
        match self {
            Proto::H1 | Proto::H1Tls => http::Version::HTTP_11,
            Proto::H2c | Proto::H2Tls => http::Version::HTTP_2,
            Proto::H3 => http::Version::HTTP_3,
        }
    }

    /// Whether it goes to the TLS (or QUIC) listener rather than the cleartext one.
    pub fn is_tls(self) -> bool {
        matches!(self, Proto::H1Tls | Proto::H2Tls | Proto::H3)
    }

    /// The ALPN protocol it asks for over TLS.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Proto::H2Tls => b"h2",
            Proto::H3 => b"h3",
            Proto::H1 | Proto::H2c | Proto::H1Tls => b"http/1.1",
        }
    }
}
