//! Which waiting action may start now, within the workspace's declared resources.
//!
//! Main type: [`Admission`]. Shared by the build scheduler and the audit, so both run
//! actions under the same rules: two trainings never share a GPU, and an idle machine
//! always takes the first waiting action, whatever it asks for (requests no machine state
//! could satisfy are refused before anything is scheduled).

use std::collections::{BTreeMap, VecDeque};

use mlbuild_workspace::{Label, Workspace};

/// Resources in use by the running actions, against the workspace's capacity.
pub(crate) struct Admission<'a> {
    ws: &'a Workspace,
    in_use: BTreeMap<String, f64>,
}

impl<'a> Admission<'a> {
    pub(crate) fn new(ws: &'a Workspace) -> Self {
        Admission {
            ws,
            in_use: BTreeMap::new(),
        }
    }

    /// The position in `pending` of the first action that fits, in the order they became
    /// ready; `idle` (nothing running) admits the first one unconditionally.
    pub(crate) fn next<T>(
        &self,
        pending: &VecDeque<T>,
        idle: bool,
        label: impl Fn(&T) -> &Label,
    ) -> Option<usize> {
        pending
            .iter()
            .position(|p| {
                fits(
                    self.resources(label(p)),
                    &self.in_use,
                    &self.ws.config.capacity,
                )
            })
            .or_else(|| (idle && !pending.is_empty()).then_some(0))
    }

    /// `label` starts: its resources are in use until [`Admission::release`].
    pub(crate) fn take(&mut self, label: &Label) {
        for (k, v) in self.resources(label) {
            *self.in_use.entry(k.clone()).or_default() += v;
        }
    }

    /// `label` finished.
    pub(crate) fn release(&mut self, label: &Label) {
        for (k, v) in self.resources(label) {
            *self.in_use.entry(k.clone()).or_default() -= v;
        }
    }

    fn resources(&self, label: &Label) -> &'a BTreeMap<String, f64> {
        &self
            .ws
            .target(label)
            .expect("scheduled targets exist")
            .resources
    }
}

pub(crate) fn fits(
    need: &BTreeMap<String, f64>,
    in_use: &BTreeMap<String, f64>,
    capacity: &BTreeMap<String, f64>,
) -> bool {
    need.iter().all(|(resource, &amount)| {
        let used = in_use.get(resource).copied().unwrap_or(0.0);
        let cap = capacity.get(resource).copied().unwrap_or(0.0);
        // Oversized CPU requests run when nothing else uses CPUs.
        used + amount <= cap + 1e-9 || (resource == "cpu" && used <= 1e-9)
    })
}
