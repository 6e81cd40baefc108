//! The one error type of this crate.

/// Everything that can go wrong while talking to vCenter.
///
/// No variant ever carries a password: [`crate::Client::login`] scrubs it
/// from whatever the server or the transport says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmwareError {
    /// The transport could not deliver the request or read the answer.
    #[error("cannot reach vCenter at {url}: {message}")]
    Transport {
        /// The endpoint that was called.
        url: String,
        /// What the transport reported.
        message: String,
    },
    /// The server answered with an HTTP error and no SOAP envelope.
    #[error("vCenter answered {method} with HTTP {status} and no SOAP answer: {body}")]
    Http {
        /// The SOAP method that was called.
        method: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The server answered with a SOAP fault.
    #[error("vSphere fault {fault_type}: {message}")]
    Fault {
        /// The fault's type, e.g. `ManagedObjectNotFound`, `FileFault`, `InvalidLogin`.
        fault_type: String,
        /// The fault's `faultstring`.
        message: String,
    },
    /// Login was refused (bad user name or password, locked account, ...).
    #[error("login to vCenter as {user:?} failed ({fault_type}): {message}")]
    Login {
        /// The user name that was tried.
        user: String,
        /// The fault's type, usually `InvalidLogin`.
        fault_type: String,
        /// The server's message, with the password (if it appeared) masked.
        message: String,
    },
    /// An inventory object looked up by name does not exist.
    #[error("{kind} {name:?} not found in the vCenter inventory")]
    NotFound {
        /// What was looked for, e.g. `virtual machine`.
        kind: String,
        /// The name that was looked for.
        name: String,
    },
    /// Several inventory objects have the name that was looked up.
    #[error("{} virtual machines are named {name:?}: {}", candidates.len(), candidates.join(", "))]
    Ambiguous {
        /// The name that was looked for.
        name: String,
        /// The managed object references (`type:value`) of the matches.
        candidates: Vec<String>,
    },
    /// A vCenter task ended in error.
    #[error("task {task} ({name}) failed with {fault_type}: {message}")]
    TaskFailed {
        /// The task's managed object id, e.g. `task-123`.
        task: String,
        /// The task's name, e.g. `CreateSnapshot_Task`.
        name: String,
        /// The type of the task's fault.
        fault_type: String,
        /// The fault's localized message.
        message: String,
    },
    /// A vCenter task did not finish within the allowed number of polls.
    #[error("task {task} was still {state} after {polls} polls")]
    TaskTimeout {
        /// The task's managed object id.
        task: String,
        /// The last state seen (`queued` or `running`).
        state: String,
        /// How many times the task was polled.
        polls: u32,
    },
    /// The answer was not what the vSphere API documents.
    #[error("unexpected answer to {method}: {detail}")]
    Parse {
        /// The SOAP method that was called.
        method: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl VmwareError {
    pub(crate) fn parse(method: &str, detail: impl Into<String>) -> Self {
        VmwareError::Parse {
            method: method.to_owned(),
            detail: detail.into(),
        }
    }
}
