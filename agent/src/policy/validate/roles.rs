//! Role inheritance: unknown parents and cycles are errors; every role gets
//! its closure (itself and everything it inherits).

use std::collections::{BTreeMap, BTreeSet};

use super::super::{Diagnostic, SourceLoc};

/// A role as declared: its parents with where they were written.
pub struct DeclaredRole {
    pub loc: SourceLoc,
    pub inherits: Vec<(String, SourceLoc)>,
}

/// Check parents and cycles; return each role's closure (sorted, itself
/// included). Roles in a cycle get no closure (the error is reported).
pub fn resolve(
    roles: &BTreeMap<String, DeclaredRole>,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Vec<String>> {
    for role in roles.values() {
        for (parent, loc) in &role.inherits {
            if !roles.contains_key(parent) {
                diags.push(
                    Diagnostic::error(
                        loc.clone(),
                        format!("unknown role `{parent}` in `inherits`"),
                    )
                    .with_hint(hint_for(parent, roles.keys())),
                );
            }
        }
    }
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in roles.keys() {
        let mut path = vec![name.clone()];
        match closure(name, roles, &mut path) {
            Ok(set) => {
                out.insert(name.clone(), set.into_iter().collect());
            }
            Err(cycle) => {
                // Report each cycle once, at the role where it is first seen.
                let key: BTreeSet<String> = cycle.iter().cloned().collect();
                let key = key.into_iter().collect::<Vec<_>>().join(",");
                if reported.insert(key) {
                    let loc = roles[&cycle[0]].loc.clone();
                    diags.push(Diagnostic::error(
                        loc,
                        format!("role inheritance cycle: {}", cycle.join(" -> ")),
                    ));
                }
            }
        }
    }
    out
}

fn closure(
    name: &str,
    roles: &BTreeMap<String, DeclaredRole>,
    path: &mut Vec<String>,
) -> Result<BTreeSet<String>, Vec<String>> {
    let mut set = BTreeSet::from([name.to_string()]);
    let Some(role) = roles.get(name) else {
        return Ok(set);
    };
    for (parent, _) in &role.inherits {
        if let Some(pos) = path.iter().position(|p| p == parent) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(parent.clone());
            return Err(cycle);
        }
        path.push(parent.clone());
        let sub = closure(parent, roles, path)?;
        path.pop();
        set.extend(sub);
    }
    Ok(set)
}

/// "did you mean" for a misspelt name.
pub fn hint_for<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&String> = known.collect();
    let close = known
        .iter()
        .filter(|k| edit_distance(k, name) <= 2)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>();
    if !close.is_empty() {
        format!("did you mean {}?", close.join(" or "))
    } else if known.is_empty() {
        "no roles are defined; add them under `roles:`".into()
    } else {
        format!(
            "defined roles: {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}
