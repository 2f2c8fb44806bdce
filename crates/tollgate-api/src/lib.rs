//! Tollgate's wire types: what `POST /v1/check` takes and answers, and the RFC 9457
//! problem details every HTTP error carries. Serde types only, no behaviour, so that the
//! server and every client (the CLI, `tollgate-client`, tests) read one definition.
//!
//! The server decodes requests with [`CheckRequest`] (borrowing from the body) and writes
//! answers with a hand-written renderer for speed; a test in `tollgate-data` holds that
//! renderer to [`CheckResponse`] byte for byte.

pub mod batch;
pub mod check;
pub mod holds;
pub mod problem;

pub use batch::{BatchRequest, BatchResponse, BatchResult, MAX_BATCH_CHECKS};
pub use check::{
    CheckRequest, CheckResponse, DescriptorRequest, DescriptorStatus, EntryRequest, LimitOverride,
};
pub use holds::{
    CommitRequest, HeartbeatRequest, HeartbeatResponse, HoldResponse, LeaseRequest, ReserveRequest,
    SettleResponse, SettledAs,
};
pub use problem::{FieldError, ProblemDetails};
