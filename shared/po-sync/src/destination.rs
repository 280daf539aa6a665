//! Where reconcile sends a PO: AppZen, Exsited, or both (issue 23). Each destination has its own queue, its own
//! reconcile function (`DESTINATION`) and its own ledger item per PO, so one destination's outage or refusal
//! never holds the other back (docs/design.md, "A second destination").

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Destination {
    #[default]
    Appzen,
    Exsited,
}

impl Destination {
    /// `appzen` or `exsited`: the name in `DESTINATION(S)`, the logs and the metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The name a person reads in an e-mail.
    pub fn label(self) -> &'static str {
        match self {
            Destination::Appzen => "AppZen",
            Destination::Exsited => "Exsited",
        }
    }

    /// The ledger's partition key of a PO's item for this destination: AppZen keeps the bare PO id (as before
    /// there was a second destination), Exsited `exsited#<id>`, which is never a number, so tools that list
    /// AppZen's POs by numeric key pass it by.
    pub fn ledger_key(self, po_id: u64) -> String {
        match self {
            Destination::Appzen => po_id.to_string(),
            Destination::Exsited => format!("exsited#{po_id}"),
        }
    }

    pub fn is_appzen(&self) -> bool {
        *self == Destination::Appzen
    }
}

/// `DESTINATIONS`: a comma-separated list of destinations, each once, at least one (`appzen,exsited`). The first
/// one mails a PO's reconciliation mismatch, so a mismatch is one e-mail per version, not one per destination.
pub fn parse_destinations(text: &str) -> Result<Vec<Destination>, String> {
    let mut destinations = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let destination: Destination = name
            .parse()
            .map_err(|_| format!("{name:?} is not a destination (expected appzen or exsited, comma-separated)"))?;
        if destinations.contains(&destination) {
            return Err(format!("{name:?} is named twice"));
        }
        destinations.push(destination);
    }
    if destinations.is_empty() {
        return Err("names no destination (expected appzen, exsited or appzen,exsited)".to_owned());
    }
    Ok(destinations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_each_destination_once_in_its_order() {
        assert_eq!(parse_destinations("appzen").unwrap(), [Destination::Appzen]);
        assert_eq!(parse_destinations(" exsited , appzen ").unwrap(), [Destination::Exsited, Destination::Appzen]);
        assert!(parse_destinations("appzen,appzen").unwrap_err().contains("twice"));
        assert!(parse_destinations("sap").unwrap_err().contains("\"sap\""));
        assert!(parse_destinations(" , ").unwrap_err().contains("no destination"));
    }

    #[test]
    fn appzen_keeps_the_bare_ledger_key_and_exsited_its_own() {
        assert_eq!(Destination::Appzen.ledger_key(48390), "48390");
        assert_eq!(Destination::Exsited.ledger_key(48390), "exsited#48390");
        assert_eq!(serde_json::to_value(Destination::Exsited).unwrap(), "exsited");
    }
}
