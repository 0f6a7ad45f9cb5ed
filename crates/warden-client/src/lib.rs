//! The client side: TLS to a cluster verified by CA pin, the JSON API
//! client, local profiles in `~/.warden`, and login/signup flows.

mod error;
pub mod http;
pub mod login;
pub mod probe;
pub mod profile;
pub mod tls;

pub use error::ClientError;
pub use http::ApiClient;
pub use profile::{Profile, ProfileStore};

pub type Result<T> = std::result::Result<T, ClientError>;
