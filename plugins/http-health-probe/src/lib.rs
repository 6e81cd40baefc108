//! `http-health-probe`: after a failover, is the application answering?
//!
//! One step, `probe`: GET a URL until it answers with the expected status
//! (and, optionally, a body containing some text), or give up after a number
//! of attempts. The plan says what will be probed; apply probes. A GET changes
//! nothing, so the action is a `read` and applying it twice is harmless.

use lifeboat_plugin_sdk::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ProbeIn {
    url: String,
    #[serde(default = "ok_status")]
    status: u16,
    #[serde(default)]
    contains: Option<String>,
    #[serde(default = "three")]
    attempts: u32,
    #[serde(default = "one_second")]
    interval_ms: u64,
}

fn ok_status() -> u16 {
    200
}
fn three() -> u32 {
    3
}
fn one_second() -> u64 {
    1000
}

/// What apply needs, carried in the action's payload.
#[derive(Serialize, Deserialize)]
struct Probe {
    url: String,
    status: u16,
    contains: Option<String>,
    attempts: u32,
    interval_ms: u64,
}

struct ProbeStep;

impl Step for ProbeStep {
    type Input = ProbeIn;

    fn info() -> StepInfo {
        StepInfo::new(
            "probe",
            "GET an HTTP health endpoint until it answers as expected",
        )
        .input(
            field::string("url")
                .required()
                .doc("The health endpoint, http:// or https://"),
        )
        .input(field::integer("status").doc("The status that means healthy (default 200)"))
        .input(field::string("contains").doc("Text the body must contain (optional)"))
        .input(field::integer("attempts").doc("Tries before giving up (default 3)"))
        .input(field::integer("interval_ms").doc("Wait between tries (default 1000)"))
        .output(field::boolean("healthy").doc("Always true: an unhealthy endpoint fails the step"))
        .output(field::integer("status").doc("The status the endpoint answered"))
        .output(field::integer("attempt").doc("The try that succeeded"))
    }

    fn plan(_: &Context, i: ProbeIn) -> Result<Plan, StepError> {
        if !i.url.starts_with("http://") && !i.url.starts_with("https://") {
            return Err(StepError::invalid_input(format!(
                "`url` must start with http:// or https://, got `{}`",
                i.url
            )));
        }
        if i.attempts == 0 {
            return Err(StepError::invalid_input("`attempts` must be at least 1"));
        }
        let mut summary = format!("GET {} until it answers {}", i.url, i.status);
        if let Some(c) = &i.contains {
            summary.push_str(&format!(" with `{c}`"));
        }
        summary.push_str(&format!(
            " ({} tries, {} ms apart)",
            i.attempts, i.interval_ms
        ));
        let probe = Probe {
            url: i.url.clone(),
            status: i.status,
            contains: i.contains,
            attempts: i.attempts,
            interval_ms: i.interval_ms,
        };
        Ok(Plan::new()
            .action(Action::read(format!("probe/{}", i.url), summary).payload(&probe))
            .output_after_apply("healthy")
            .output_after_apply("status")
            .output_after_apply("attempt"))
    }

    fn apply(_: &Context, _: ProbeIn, a: &Action) -> Result<Outputs, StepError> {
        let p: Probe = a.payload_as()?;
        let mut last = String::new();
        for attempt in 1..=p.attempts {
            if attempt > 1 {
                std::thread::sleep(std::time::Duration::from_millis(p.interval_ms));
            }
            match lifeboat_plugin_sdk::http::get(&p.url) {
                Ok(r) if r.status == p.status => {
                    let body = r.text();
                    match &p.contains {
                        Some(c) if !body.contains(c.as_str()) => {
                            last = format!("answered {} without `{c}`", r.status);
                        }
                        _ => {
                            lifeboat_plugin_sdk::log::info(
                                "healthy",
                                &[("url", &p.url), ("attempt", &attempt.to_string())],
                            );
                            return Ok(Outputs::new()
                                .set("healthy", true)
                                .set("status", r.status)
                                .set("attempt", attempt));
                        }
                    }
                }
                Ok(r) => last = format!("answered {}", r.status),
                Err(e) => last = e.message,
            }
            lifeboat_plugin_sdk::log::warn(
                "not healthy yet",
                &[
                    ("url", &p.url),
                    ("attempt", &attempt.to_string()),
                    ("seen", &last),
                ],
            );
        }
        Err(StepError::retryable(
            "unhealthy",
            format!(
                "{} is not healthy after {} tries: {last}",
                p.url, p.attempts
            ),
        ))
    }
}

lifeboat_plugin_sdk::plugin!(
    name: "http-health-probe",
    version: "0.1.0",
    doc: "Probe an HTTP health endpoint (the plugin tutorial's plugin)",
    steps: [ProbeStep],
);
