use thiserror::Error;

/// Client errors, worded for the person at the terminal.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "cannot reach {addr}: {reason}; check the address and that 'warden start' is running there"
    )]
    Unreachable { addr: String, reason: String },
    #[error("CA pin mismatch for {addr}: expected {expected}, the server presented {presented}. Refusing to talk to it: this may be a different cluster or an attacker in the middle. Check the pin with your cluster admin")]
    PinMismatch {
        addr: String,
        expected: String,
        presented: String,
    },
    #[error("{addr} is not yet trusted: its CA is {presented}. Pass --ca-pin {presented} if that is what your admin gave you")]
    UntrustedCluster { addr: String, presented: String },
    #[error("{addr} is {what}, not a Warden proxy; pass the proxy's address (port 3080 unless 'warden start' was given --listen-addr)")]
    WrongPort { addr: String, what: &'static str },
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    /// The server answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected response from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Local(e.to_string())
    }
}

impl From<warden_ca::CaError> for ClientError {
    fn from(e: warden_ca::CaError) -> Self {
        ClientError::Local(e.to_string())
    }
}
