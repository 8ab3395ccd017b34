//! The SMART Backend Services client: everything needed to turn a client id,
//! a private key and a FHIR base URL into an access token. No Kubernetes here.
//!
//! Specification: SMART App Launch 2.x "Backend Services" and "Client
//! Authentication: Asymmetric", RFC 7523 (JWT client assertions), RFC 7517/7518
//! (JWK/JWA), RFC 7638 (JWK thumbprints), RFC 6749 §5.2 (OAuth errors).

pub mod algorithm;
pub mod assertion;
pub mod destination;
pub mod discovery;
pub mod http;
pub mod issuer;
pub mod keys;
pub mod secret;
pub mod signer;
pub mod token;
pub mod trust;

pub use algorithm::SigningAlgorithm;
pub use assertion::{AssertionParams, ClientAssertion};
pub use destination::DestinationPolicy;
pub use discovery::{AlgorithmChoice, DiscoveryError, DiscoveryWarning, SmartConfiguration};
pub use http::{HttpClient, HttpError, HttpPolicy, TlsProblem};
pub use issuer::MetadataSource;
pub use keys::{KeyError, PrivateKey, SigningKey};
pub use secret::SecretString;
pub use signer::SignerError;
pub use token::{AccessToken, ErrorClass, TokenError, TokenRequest};
