//! `POST /v1/checks`: many independent checks in one request, answered in order.

use serde::{Deserialize, Serialize};

use crate::check::{CheckRequest, CheckResponse};
use crate::problem::ProblemDetails;

/// Most checks one batch may carry.
pub const MAX_BATCH_CHECKS: usize = 1000;

/// Independent checks, each decided as `POST /v1/check` would decide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest<'a> {
    /// The checks, 1 to [`MAX_BATCH_CHECKS`].
    #[serde(borrow)]
    pub checks: Vec<CheckRequest<'a>>,
}

/// One answer per check, in the order of the checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchResponse {
    /// The answers.
    pub results: Vec<BatchResult>,
}

/// A check's answer: its decision, or why it was refused (the others still count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchResult {
    /// Decided, as `POST /v1/check` answers.
    Decided(CheckResponse),
    /// Refused: the problem `POST /v1/check` would have answered with.
    Refused {
        /// The problem.
        error: ProblemDetails,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_read_back_as_decisions_or_errors() {
        let text = r#"{"results":[{"allowed":true,"statuses":[]},{"error":{"type":"urn:tollgate:problem:invalid-request","title":"Invalid request","status":400,"detail":"no descriptors"}}]}"#;
        let r: BatchResponse = serde_json::from_str(text).unwrap();
        assert!(matches!(&r.results[0], BatchResult::Decided(d) if d.allowed));
        assert!(matches!(&r.results[1], BatchResult::Refused { error } if error.status == 400));
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
    }
}
