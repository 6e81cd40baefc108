//! Submitting a deployment to Azure Resource Manager (ARM) over REST:
//! `PUT …/deployments/NAME`, then `GET` it until `provisioningState` is final.
//!
//! The answers are read by [`interpret`], a pure function tested on recorded
//! ARM answers (`tests/recordings/arm/`).

use lifeboat_plugin_sdk::StepError;
use serde::Deserialize;

use lifeboat_plugin_sdk::http;
use std::time::{Duration, Instant};

/// `api-version` of `Microsoft.Resources/deployments` calls.
pub const DEPLOYMENTS_API_VERSION: &str = "2021-04-01";

/// Default seconds between two polls of a running deployment.
pub const DEFAULT_POLL_SECONDS: f64 = 10.0;
/// Default seconds to wait for a deployment to finish.
pub const DEFAULT_WAIT_SECONDS: f64 = 1500.0;

/// Where and how to submit: the `arm` input of `create-vm`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmTarget {
    /// `https://management.azure.com` (or a stand-in).
    pub endpoint: String,
    /// An ARM access token (`az account get-access-token`); sent as
    /// `Authorization: Bearer …`, never shown.
    pub token: String,
    /// Seconds between polls (default 10).
    #[serde(default)]
    pub poll_seconds: Option<f64>,
    /// Seconds to wait for the deployment to finish (default 1500).
    #[serde(default)]
    pub wait_seconds: Option<f64>,
}

impl std::fmt::Debug for ArmTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmTarget")
            .field("endpoint", &self.endpoint)
            .field("token", &"(redacted)")
            .finish()
    }
}

impl ArmTarget {
    /// Check the fields; returns the endpoint without a trailing `/`.
    pub fn check(&self) -> Result<String, StepError> {
        let e = self.endpoint.trim().trim_end_matches('/');
        let rest = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| {
            !r.is_empty()
                && !r.starts_with('/')
                && !r.contains(['?', '#', ' '])
                && !r.contains(char::is_control)
        });
        if !ok {
            return Err(StepError::invalid_input(format!(
                "arm.endpoint {:?} is not an http(s) URL such as https://management.azure.com",
                self.endpoint
            )));
        }
        if self.token.trim().is_empty() {
            return Err(StepError::invalid_input(
                "arm.token is empty; pass an ARM access token through a secret (`${{ secrets.NAME }}`)",
            ));
        }
        for (field, v) in [
            ("arm.poll_seconds", self.poll_seconds),
            ("arm.wait_seconds", self.wait_seconds),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0 && v <= 86_400.0)
            {
                return Err(StepError::invalid_input(format!(
                    "{field} is {v}; give a number of seconds above 0 and at most 86400"
                )));
            }
        }
        Ok(e.to_string())
    }
}

/// The URL of deployment `name` of resource group `rg`.
pub fn deployment_url(endpoint: &str, subscription: &str, rg: &str, name: &str) -> String {
    format!(
        "{}/subscriptions/{subscription}/resourcegroups/{rg}/providers/Microsoft.Resources/deployments/{name}?api-version={DEPLOYMENTS_API_VERSION}",
        endpoint.trim_end_matches('/')
    )
}

/// Where a deployment stands after one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Accepted or running: poll again. Holds ARM's state.
    Running(String),
    /// `provisioningState` `Succeeded`.
    Succeeded,
    /// `409 DeploymentActive`: a deployment of that name is still running
    /// (e.g. one an interrupted apply started); wait for it, then submit again.
    Active,
}

#[derive(Deserialize, Default)]
struct ArmErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    details: Vec<ArmErrorBody>,
}

/// `CODE: message (DETAIL: message; …)`.
fn describe(e: &ArmErrorBody) -> String {
    let mut s = match (e.code.is_empty(), e.message.is_empty()) {
        (false, false) => format!("{}: {}", e.code, e.message),
        (false, true) => e.code.clone(),
        (true, false) => e.message.clone(),
        (true, true) => "no error details".into(),
    };
    if !e.details.is_empty() {
        let d: Vec<String> = e.details.iter().map(describe).collect();
        s.push_str(&format!(" ({})", d.join("; ")));
    }
    s
}

/// The `error` object of an ARM answer, at the top or under `properties`.
fn error_of(v: &serde_json::Value) -> ArmErrorBody {
    let e = v
        .get("error")
        .or_else(|| v.get("properties").and_then(|p| p.get("error")));
    e.and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default()
}

/// Read one ARM answer to `PUT` or `GET` of deployment `name`.
pub fn interpret(status: u16, body: &str, name: &str) -> Result<Progress, StepError> {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let err = json.as_ref().map(error_of).unwrap_or_default();
    let said = || {
        if json.is_some() {
            describe(&err)
        } else {
            let t: String = body.trim().chars().take(200).collect();
            if t.is_empty() { "no body".into() } else { t }
        }
    };
    match status {
        200..=202 => {
            let Some(v) = json else {
                return Err(StepError::retryable(
                    "unavailable",
                    format!(
                        "ARM answered {status} for deployment {name} without a JSON body: {}",
                        said()
                    ),
                ));
            };
            let state = v
                .get("properties")
                .and_then(|p| p.get("provisioningState"))
                .and_then(|s| s.as_str())
                .unwrap_or("Accepted");
            match state {
                "Succeeded" => Ok(Progress::Succeeded),
                "Failed" | "Canceled" => Err(StepError::new(
                    "deployment-failed",
                    format!(
                        "ARM deployment {name} {}: {}",
                        state.to_ascii_lowercase(),
                        describe(&error_of(&v))
                    ),
                )),
                other => Ok(Progress::Running(other.to_string())),
            }
        }
        409 if err.code == "DeploymentActive" => Ok(Progress::Active),
        400 | 422 => Err(StepError::invalid_input(format!(
            "ARM rejected deployment {name} ({status} {})",
            said()
        ))),
        401 | 403 => Err(StepError::new(
            "denied",
            format!(
                "ARM refused deployment {name} ({status} {}); check that `arm.token` is a valid token \
                 with rights on the resource group",
                said()
            ),
        )),
        404 => Err(StepError::new(
            "not-found",
            format!(
                "ARM: deployment {name} ({status} {}); check `subscription` and `resource_group`",
                said()
            ),
        )),
        409 => Err(StepError::new(
            "conflict",
            format!("ARM refused deployment {name} ({status} {})", said()),
        )),
        429 | 500..=599 => Err(StepError::retryable(
            "unavailable",
            format!(
                "ARM is unavailable for deployment {name} ({status} {})",
                said()
            ),
        )),
        other => Err(StepError::new(
            "unexpected",
            format!("ARM answered {other} for deployment {name}: {}", said()),
        )),
    }
}

/// Submit `body` as deployment `name` at `url` and wait until it succeeded.
/// Returns the number of polls.
pub fn submit(target: &ArmTarget, url: &str, body: &str, name: &str) -> Result<u32, StepError> {
    let auth = format!("Bearer {}", target.token.trim());
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    let poll = secs(target.poll_seconds.unwrap_or(DEFAULT_POLL_SECONDS));
    let wait = secs(target.wait_seconds.unwrap_or(DEFAULT_WAIT_SECONDS));
    let start = Instant::now();
    let mut polls = 0u32;
    // At most twice: a second time after waiting for an active deployment of
    // the same name to finish.
    for attempt in 1..=2 {
        let r = http::send("PUT", url, &headers, body.as_bytes())?;
        let first = interpret(r.status, &r.text(), name)?;
        lifeboat_plugin_sdk::log::info(
            "ARM deployment submitted",
            &[("deployment", name), ("status", &r.status.to_string())],
        );
        let active = first == Progress::Active;
        let mut progress = first;
        loop {
            match &progress {
                Progress::Succeeded => return Ok(polls),
                Progress::Running(_) | Progress::Active => {}
            }
            let waited = start.elapsed();
            if waited >= wait {
                let state = match &progress {
                    Progress::Running(s) => s.clone(),
                    _ => "active".into(),
                };
                return Err(StepError::retryable(
                    "timeout",
                    format!(
                        "ARM deployment {name} is still {state} after {:.0} s (arm.wait_seconds); \
                         it carries on in Azure: apply again to wait for it",
                        waited.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(poll.min(wait - waited));
            polls += 1;
            let r = http::send("GET", url, &headers[..1], &[])?;
            let next = interpret(r.status, &r.text(), name);
            progress = match next {
                // the other deployment failed: ours is submitted next
                Err(e) if active && e.code == "deployment-failed" => break,
                Err(e) => return Err(e),
                Ok(Progress::Succeeded) if active => break,
                Ok(p) => p,
            };
            if let Progress::Running(s) = &progress {
                lifeboat_plugin_sdk::log::info(
                    "ARM deployment running",
                    &[("deployment", name), ("state", s)],
                );
            }
        }
        if attempt == 2 {
            break;
        }
    }
    Err(StepError::new(
        "conflict",
        format!(
            "ARM deployment {name} stayed active through two submissions; wait for it in the Azure portal and apply again"
        ),
    ))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.001, 86_400.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/recordings/arm")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn recorded_answers() {
        let n = "lifeboat-failover-web01-test";
        assert_eq!(
            interpret(201, &rec("put-created.json"), n).unwrap(),
            Progress::Running("Accepted".into())
        );
        assert_eq!(
            interpret(200, &rec("get-running.json"), n).unwrap(),
            Progress::Running("Running".into())
        );
        assert_eq!(
            interpret(200, &rec("get-succeeded.json"), n).unwrap(),
            Progress::Succeeded
        );
        let e = interpret(200, &rec("get-failed.json"), n).unwrap_err();
        assert_eq!(e.code, "deployment-failed");
        assert!(!e.retryable);
        assert!(
            e.message.starts_with("ARM deployment lifeboat-failover-web01-test failed: DeploymentFailed: At least one resource deployment operation failed."),
            "{e}"
        );
        assert!(e.message.contains("(OperationNotAllowed: Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota."), "{e}");
        assert_eq!(
            interpret(409, &rec("put-conflict-active.json"), n).unwrap(),
            Progress::Active
        );
        let e = interpret(401, &rec("put-unauthorized.json"), n).unwrap_err();
        assert_eq!(e.code, "denied");
        assert!(e.message.contains("401 ExpiredAuthenticationToken"), "{e}");
        assert!(e.message.contains("`arm.token`"), "{e}");
        let e = interpret(400, &rec("put-invalid-template.json"), n).unwrap_err();
        assert_eq!(e.code, "invalid-input");
        assert!(e.message.contains("InvalidTemplate"), "{e}");
        let e = interpret(404, &rec("put-resource-group-not-found.json"), n).unwrap_err();
        assert!(
            e.message.contains("ResourceGroupNotFound") && e.message.contains("`resource_group`"),
            "{e}"
        );
    }

    #[test]
    fn other_statuses() {
        let e = interpret(503, "busy", "d").unwrap_err();
        assert!(
            e.retryable && e.code == "unavailable" && e.message.contains("503 busy"),
            "{e}"
        );
        let e = interpret(
            429,
            "{\"error\":{\"code\":\"TooManyRequests\",\"message\":\"slow down\"}}",
            "d",
        )
        .unwrap_err();
        assert!(
            e.retryable && e.message.contains("TooManyRequests: slow down"),
            "{e}"
        );
        let e = interpret(200, "<html>", "d").unwrap_err();
        assert!(e.retryable, "{e}");
        let e = interpret(
            409,
            "{\"error\":{\"code\":\"Conflict\",\"message\":\"x\"}}",
            "d",
        )
        .unwrap_err();
        assert_eq!(e.code, "conflict");
        assert_eq!(
            interpret(200, "{\"properties\":{}}", "d").unwrap(),
            Progress::Running("Accepted".into())
        );
        let e = interpret(
            200,
            "{\"properties\":{\"provisioningState\":\"Canceled\"}}",
            "d",
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("deployment d canceled: no error details"),
            "{e}"
        );
    }

    #[test]
    fn targets() {
        let t = |endpoint: &str, token: &str| ArmTarget {
            endpoint: endpoint.into(),
            token: token.into(),
            poll_seconds: None,
            wait_seconds: None,
        };
        assert_eq!(
            t("https://management.azure.com/", "x").check().unwrap(),
            "https://management.azure.com"
        );
        assert_eq!(
            t("http://127.0.0.1:8080", "x").check().unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(
            t("management.azure.com", "x")
                .check()
                .unwrap_err()
                .message
                .contains("arm.endpoint")
        );
        assert!(t("https://a/?x=1", "x").check().is_err());
        assert!(
            t("https://a", " ")
                .check()
                .unwrap_err()
                .message
                .contains("arm.token is empty")
        );
        let mut bad = t("https://a", "x");
        bad.poll_seconds = Some(0.0);
        assert!(
            bad.check()
                .unwrap_err()
                .message
                .contains("arm.poll_seconds")
        );
        let dbg = format!("{:?}", t("https://a", "s3cr3t"));
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert_eq!(
            deployment_url("https://management.azure.com", "sub", "rg", "d"),
            "https://management.azure.com/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Resources/deployments/d?api-version=2021-04-01"
        );
    }
}
