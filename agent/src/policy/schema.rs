//! `palisade policy schema`: the JSON Schema of policy files, derived from
//! the same types the parser uses, for editors (e.g. the YAML language
//! server's `# yaml-language-server: $schema=…`).

use super::model::PolicyDoc;

pub fn json_schema() -> serde_json::Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(PolicyDoc)).unwrap_or_default();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "title".into(),
            serde_json::Value::String("Palisade policy".into()),
        );
    }
    schema
}

#[cfg(test)]
mod tests {
    #[test]
    fn schema_names_the_contract_fields_and_forbids_unknown_keys() {
        let s = super::json_schema();
        let text = s.to_string();
        for key in [
            "identities",
            "egress",
            "allow",
            "deny",
            "require_approval",
            "cidr",
            "host",
            "ports",
            "protocol",
            "roles",
            "inherits",
            "approval_if",
            "budgets",
        ] {
            assert!(text.contains(&format!("\"{key}\"")), "schema lacks {key}");
        }
        assert!(
            text.contains("\"additionalProperties\":false"),
            "unknown keys must be rejected"
        );
    }
}
