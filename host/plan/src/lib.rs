//! Validated workflow + plugin answers -> deterministic, versioned Plan; text and JSON renderers
