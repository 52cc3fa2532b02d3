//! Placeholder until the sqlparser guard lands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateTarget {
    pub schema: Option<String>,
    pub table: String,
}
pub fn check_read(_sql: &str) -> Result<(), Refused> {
    Ok(())
}
pub fn check_update(_sql: &str) -> Result<UpdateTarget, Refused> {
    Err(Refused("todo".into()))
}
