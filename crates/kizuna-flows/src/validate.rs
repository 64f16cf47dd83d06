//! Reading a definition and checking it before it is saved, with errors that name the field: unknown or
//! duplicate step, unreachable step, missing branch, a cycle without a wait, an unknown template or segment.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::definition::{FlowDefinition, StepKind, Trigger};

/// One problem, with the field it is at (`steps[2].next`, `trigger.segment_entered`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at {field})")]
pub struct FlowError {
    pub field: String,
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> FlowError {
    FlowError { field: field.into(), message: message.into() }
}

/// What the flow refers to outside itself.
pub trait Resolver {
    fn template_exists(&self, name: &str) -> bool;
    fn segment_exists(&self, name: &str) -> bool;
}

/// Reads a definition from its JSON form; a shape error names its path.
pub fn from_json(value: &Value) -> Result<FlowDefinition, FlowError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        // A step's fields sit beside its id (serde flattens them), which hides the inner path: read the step's
        // kind alone to find it.
        if let Some(i) =
            field.strip_prefix("steps[").and_then(|r| r.strip_suffix(']')).and_then(|i| i.parse::<usize>().ok())
            && let Some(Value::Object(step)) = value.get("steps").and_then(|s| s.get(i))
        {
            let mut kind = step.clone();
            kind.remove("id");
            if let Some((key, message)) = typed_field_error(&kind) {
                return error(format!("{field}.{key}"), message);
            }
            if let Err(inner) = serde_path_to_error::deserialize::<_, crate::definition::StepKind>(Value::Object(kind))
            {
                let at = inner.path().to_string();
                let at = if at == "." { field.clone() } else { format!("{field}.{at}") };
                return error(at, inner.into_inner().to_string());
            }
        }
        error(field, e.into_inner().to_string())
    })
}

/// The first field of a step whose own type rejects its value (a tagged enum's fields are read in one piece,
/// so serde cannot say which one failed).
fn typed_field_error(step: &serde_json::Map<String, Value>) -> Option<(String, String)> {
    use crate::definition::{Branch, FlowCondition, LocalTime};
    fn check<T: serde::de::DeserializeOwned>(key: &str, value: &Value) -> Option<(String, String)> {
        serde_path_to_error::deserialize::<_, T>(value.clone()).err().map(|e| {
            let inner = e.path().to_string();
            let at = if inner == "." { key.to_string() } else { format!("{key}.{inner}") };
            (at, e.into_inner().to_string())
        })
    }
    step.iter().find_map(|(key, value)| match key.as_str() {
        "if" => check::<FlowCondition>(key, value),
        "for" | "timeout" => check::<kizuna_segments::Span>(key, value),
        "until" => check::<LocalTime>(key, value),
        "event" => check::<kizuna_segments::EventMatch>(key, value),
        "branches" => check::<Vec<Branch>>(key, value),
        _ => None,
    })
}

/// Checks the step graph and what the flow refers to.
pub fn check(flow: &FlowDefinition, resolver: &dyn Resolver) -> Result<(), FlowError> {
    check_shape(flow)?;
    check_references(flow, resolver)
}

/// The checks that need nothing outside the definition.
pub fn check_shape(flow: &FlowDefinition) -> Result<(), FlowError> {
    if flow.steps.is_empty() {
        return Err(error("steps", "a flow needs at least one step"));
    }
    let mut index = BTreeMap::new();
    for (i, step) in flow.steps.iter().enumerate() {
        let valid = !step.id.is_empty()
            && step.id.len() <= 64
            && step.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(error(format!("steps[{i}].id"), "a step id is 1–64 letters, digits, '_' or '-'"));
        }
        if index.insert(step.id.as_str(), i).is_some() {
            return Err(error(format!("steps[{i}].id"), format!("duplicate step id \"{}\"", step.id)));
        }
    }
    for (i, step) in flow.steps.iter().enumerate() {
        for (field, target) in step.exits() {
            if let Some(target) = target
                && !index.contains_key(target)
            {
                let at = exit_field(step, i, field, target);
                return Err(error(at, format!("unknown step \"{target}\"")));
            }
        }
        check_step(step, i)?;
    }
    // Reachability from the first step.
    let mut seen = BTreeSet::new();
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        for (_, target) in flow.steps[i].exits() {
            if let Some(&j) = target.and_then(|t| index.get(t)) {
                stack.push(j);
            }
        }
    }
    if let Some(i) = (0..flow.steps.len()).find(|i| !seen.contains(i)) {
        return Err(error(
            format!("steps[{i}]"),
            format!("step \"{}\" is unreachable from the first step", flow.steps[i].id),
        ));
    }
    // A cycle made only of instant steps would loop forever: depth-first search over the graph without the
    // edges out of waiting steps.
    let mut state = vec![0u8; flow.steps.len()]; // 0 new, 1 on the stack, 2 done
    for start in 0..flow.steps.len() {
        if let Some(cycle) = instant_cycle(flow, &index, start, &mut state, &mut Vec::new()) {
            let names: Vec<&str> = cycle.iter().map(|&i| flow.steps[i].id.as_str()).collect();
            return Err(error(
                format!("steps[{}]", cycle[0]),
                format!("cycle without a wait: {} (add a delay or a wait_for_event)", names.join(" → ")),
            ));
        }
    }
    if let Trigger::Event(event) = &flow.trigger
        && event.name.trim().is_empty()
    {
        return Err(error("trigger.event.name", "the event name is empty"));
    }
    Ok(())
}

fn exit_field(step: &crate::definition::Step, i: usize, field: &str, target: &str) -> String {
    if let StepKind::Split { branches } = &step.kind
        && let Some(b) = branches.iter().position(|b| b.next.as_deref() == Some(target))
    {
        return format!("steps[{i}].branches[{b}].next");
    }
    format!("steps[{i}].{field}")
}

fn instant_cycle(
    flow: &FlowDefinition,
    index: &BTreeMap<&str, usize>,
    i: usize,
    state: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    match state[i] {
        2 => return None,
        1 => {
            let from = path.iter().position(|&p| p == i).unwrap_or(0);
            let mut cycle = path[from..].to_vec();
            cycle.push(i);
            return Some(cycle);
        }
        _ => {}
    }
    state[i] = 1;
    path.push(i);
    if !flow.steps[i].waits() {
        for (_, target) in flow.steps[i].exits() {
            if let Some(&j) = target.and_then(|t| index.get(t))
                && let Some(cycle) = instant_cycle(flow, index, j, state, path)
            {
                return Some(cycle);
            }
        }
    }
    path.pop();
    state[i] = 2;
    None
}

fn check_step(step: &crate::definition::Step, i: usize) -> Result<(), FlowError> {
    let at = |field: &str| format!("steps[{i}].{field}");
    match &step.kind {
        StepKind::Delay { duration, until, .. } => {
            if duration.is_none() && until.is_none() {
                return Err(error(at("for"), "a delay needs `for` (a span), `until` (a local time) or both"));
            }
        }
        StepKind::WaitForEvent { event, timeout, .. } => {
            if event.name.trim().is_empty() {
                return Err(error(at("event.name"), "the event name is empty"));
            }
            if timeout.amount == 0 {
                return Err(error(at("timeout"), "the timeout must be longer than zero"));
            }
        }
        StepKind::Split { branches } => {
            if branches.len() < 2 {
                return Err(error(at("branches"), "a split needs at least two branches"));
            }
            let mut names = BTreeSet::new();
            for (b, branch) in branches.iter().enumerate() {
                if branch.weight == 0 {
                    return Err(error(at(&format!("branches[{b}].weight")), "a branch weight is at least 1"));
                }
                if branch.name.is_empty() || !names.insert(branch.name.as_str()) {
                    return Err(error(at(&format!("branches[{b}].name")), "branch names are unique and not empty"));
                }
            }
        }
        StepKind::Holdout { percent, .. } => {
            if !(percent.is_finite() && *percent > 0.0 && *percent < 100.0) {
                return Err(error(at("percent"), "a hold-out is more than 0 and less than 100 percent"));
            }
        }
        StepKind::Send { template, .. } => {
            if template.is_empty() {
                return Err(error(at("template"), "the template name is empty"));
            }
        }
        StepKind::UpdateProfile { traits, .. } => {
            if traits.is_empty() {
                return Err(error(at("traits"), "no traits to set"));
            }
        }
        StepKind::Tag { add, remove, .. } => {
            if add.is_empty() && remove.is_empty() {
                return Err(error(at("add"), "a tag step adds or removes at least one tag"));
            }
        }
        StepKind::Webhook { url, .. } => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(error(at("url"), "the URL must start with http:// or https://"));
            }
        }
        StepKind::AwardPoints { points, .. } => {
            if *points == 0 {
                return Err(error(at("points"), "award a non-zero number of points"));
            }
        }
        StepKind::Condition { .. } | StepKind::Exit => {}
    }
    Ok(())
}

fn check_references(flow: &FlowDefinition, resolver: &dyn Resolver) -> Result<(), FlowError> {
    for (i, step) in flow.steps.iter().enumerate() {
        if let StepKind::Send { template, .. } = &step.kind
            && !resolver.template_exists(template)
        {
            return Err(error(format!("steps[{i}].template"), format!("unknown template \"{template}\"")));
        }
    }
    let trigger_segment = match &flow.trigger {
        Trigger::SegmentEntered(s) => Some(("trigger.segment_entered", s)),
        Trigger::SegmentExited(s) => Some(("trigger.segment_exited", s)),
        Trigger::Schedule(s) => s.segment.as_ref().map(|s| ("trigger.schedule.segment", s)),
        _ => None,
    };
    if let Some((field, segment)) = trigger_segment
        && !resolver.segment_exists(segment)
    {
        return Err(error(field, format!("unknown segment \"{segment}\"")));
    }
    let mut conditions: Vec<(String, &kizuna_segments::Condition)> = Vec::new();
    conditions.extend(flow.entry.filter.as_ref().map(|c| ("entry.filter".to_string(), &c.0)));
    conditions.extend(flow.filter.as_ref().map(|c| ("filter".to_string(), &c.0)));
    for (i, step) in flow.steps.iter().enumerate() {
        if let StepKind::Condition { condition, .. } = &step.kind {
            conditions.push((format!("steps[{i}].if"), &condition.0));
        }
    }
    for (field, condition) in conditions {
        kizuna_segments::check(condition).map_err(|e| error(field.clone(), e.to_string()))?;
        if let Some(unknown) = condition.referenced_segments().into_iter().find(|s| !resolver.segment_exists(s)) {
            return Err(error(field, format!("unknown segment \"{unknown}\"")));
        }
    }
    Ok(())
}
