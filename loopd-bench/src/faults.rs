//! Reconciling what the client saw with what the server says it did on purpose.
//!
//! With `--server-metrics URL` (one per backend), loopd-bench scrapes each server's
//! `loopd_faults_injected_total{service,listener,fault}` before the run and after it, and
//! gives the difference per backend, listener and fault kind. Then, for each kind of error it
//! counted (and for UDP loss and late replies), it says how many the server's faults explain
//! and how many remain unexplained.
//!
//! Which fault kinds can explain which error kinds is [`EXPLAINS`], a documented table
//! (`docs/F-fault-injection.md`). Each injection explains at most one error: the
//! assignment is a maximum flow from fault counts to error counts through the table's edges,
//! so no fault count explains more errors than it injected, and an error explained by one
//! fault is not explained again by another. A run whose every error is explained passes; an
//! unexplained error fails it. A proxy that injects faults cannot do this — it is not the
//! endpoint that counts.
//!
//! One exception, said where it applies: `refuse` stops the listening socket, and the
//! kernel, not loopd, refuses each connect, so loopd counts the window and not each refusal.
//! Refused connects are explained by a `refuse` window without a bound per connect.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cpu::MetricsUrl;

/// The metric family loopd exports its injections in.
pub const FAMILY: &str = "loopd_faults_injected_total";

/// The gauge that says a listener fault's window is open.
pub const ACTIVE: &str = "loopd_faults_active";

/// Which faults can explain which errors: an error kind (as the report names it, or `loss`
/// and `late` for UDP), and the fault kinds that can cause it.
pub const EXPLAINS: &[(&str, &[&str])] = &[
    ("connect_refused", &["refuse"]),
    ("connect_timeout", &["stop-accept"]),
    ("connect_reset", &["fail-first", "refuse"]),
    (
        "reset",
        &["reset-after", "fail-first", "close-before-reply"],
    ),
    ("io", &["reset-after", "fail-first", "close-before-reply"]),
    // A proxy between client and backend (HAProxy in TCP mode) relays a backend's RST to the
    // client as its own FIN: resets can arrive as closes.
    (
        "unexpected_close",
        &[
            "close-after",
            "idle-close",
            "close-before-reply",
            "reset-after",
            "fail-first",
        ],
    ),
    (
        "short_echo",
        &[
            "close-after",
            "reset-after",
            "close-before-reply",
            "fail-first",
        ],
    ),
    ("mismatch", &["corrupt"]),
    (
        "unanswered",
        &[
            "blackhole",
            "delay",
            "first-byte-delay",
            "bandwidth",
            "slice",
            "stop-accept",
        ],
    ),
    (
        "unserved",
        &["blackhole", "stop-accept", "first-byte-delay", "delay"],
    ),
    ("stalled", &["blackhole", "delay", "bandwidth", "slice"]),
    ("loss", &["drop", "fail-first", "delay"]),
    ("late", &["duplicate", "reorder", "delay"]),
];

/// Errors that one injection causes *besides* the one it is matched with: a corrupted UDP
/// reply fails verification (a mismatch) and leaves its datagram unanswered (a loss). Each
/// such pair has a capacity of its own, equal to the fault's count.
pub const ALSO: &[(&str, &str)] = &[("corrupt", "loss")];

/// Faults whose count is a window, not a count of connections affected (see the module
/// documentation).
const UNBOUNDED: &[&str] = &["refuse"];

/// One backend's injections of one kind on one listener during the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    /// The metrics URL it was read from.
    pub backend: String,
    /// The listener (`service@address`).
    pub listener: String,
    /// The fault kind.
    pub fault: String,
    /// Injections during the run.
    pub count: u64,
}

/// One error kind reconciled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The error kind.
    pub error: String,
    /// How many the client counted.
    pub seen: u64,
    /// How many the server's faults explain, by fault kind.
    pub explained_by: BTreeMap<String, u64>,
    /// How many nothing explains.
    pub unexplained: u64,
}

/// The reconciliation of a run. See the [module documentation](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    /// What each backend injected during the run.
    pub injected: Vec<Injected>,
    /// Each error kind the client counted.
    pub rows: Vec<Row>,
}

/// The counters of one page: `(listener, fault) → count`.
pub type Counters = BTreeMap<(String, String), u64>;

/// Reads the injection counters from a Prometheus text page. Samples that are not
/// well-formed counters are skipped.
pub fn parse(page: &str) -> Counters {
    let mut out = Counters::new();
    for line in page.lines() {
        // A window open at a scrape (the gauge) counts as one injection of its kind, under
        // its own key, so it explains what the window caused even if it opened before the
        // run (its counter did not move during it).
        let (rest, suffix) = match (line.strip_prefix(FAMILY), line.strip_prefix(ACTIVE)) {
            (Some(r), _) => (r, ""),
            (None, Some(r)) => (r, " (open window)"),
            _ => continue,
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        let value = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let (Some(service), Some(listener), Some(fault), Some(v)) =
            (label("service"), label("listener"), label("fault"), value)
        {
            // Only a window without a count of its own needs its gauge (stop-accept counts
            // each connection that waits).
            let window_only = suffix.is_empty() || UNBOUNDED.contains(&fault.as_str());
            if v.is_finite() && v >= 0.0 && window_only {
                out.insert((format!("{service}@{listener}{suffix}"), fault), v as u64);
            }
        }
    }
    out
}

/// Scrapes every URL's counters, in order.
pub fn scrape(urls: &[MetricsUrl]) -> Result<Vec<Counters>, String> {
    urls.iter()
        .map(|u| {
            u.get()
                .map(|page| parse(&page))
                .map_err(|e| format!("{}: {e}", u.url))
        })
        .collect()
}

/// What was injected between two scrapes of the same URLs.
pub fn injected(urls: &[MetricsUrl], before: &[Counters], after: &[Counters]) -> Vec<Injected> {
    let mut out = Vec::new();
    for ((url, a), b) in urls.iter().zip(before).zip(after) {
        for ((listener, fault), &n) in b {
            let key = (listener.clone(), fault.clone());
            let count = if listener.ends_with("(open window)") {
                // Open at either end of the run.
                n.max(a.get(&key).copied().unwrap_or(0))
            } else {
                n.saturating_sub(a.get(&key).copied().unwrap_or(0))
            };
            out.push(Injected {
                backend: url.url.clone(),
                listener: listener.clone(),
                fault: fault.clone(),
                count,
            });
        }
    }
    out
}

impl Reconciliation {
    /// Reconciles the client's `errors` (by kind name; UDP `loss` and `late` included) with
    /// what the servers `injected`.
    pub fn new(injected: Vec<Injected>, errors: &BTreeMap<String, u64>) -> Reconciliation {
        // The same backend, listener and fault from several runs (iterations): added.
        let mut merged: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for i in injected {
            *merged.entry((i.backend, i.listener, i.fault)).or_default() += i.count;
        }
        let injected: Vec<Injected> = merged
            .into_iter()
            .map(|((backend, listener, fault), count)| Injected {
                backend,
                listener,
                fault,
                count,
            })
            .collect();
        let mut by_fault: BTreeMap<String, u64> = BTreeMap::new();
        for i in &injected {
            *by_fault.entry(i.fault.clone()).or_default() += i.count;
        }
        let errors: Vec<(String, u64)> = errors
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| (k.clone(), n))
            .collect();
        let faults: Vec<(String, u64)> = by_fault.into_iter().collect();
        let flows = assign(&errors, &faults);
        // The second error of one injection, each with its own capacity.
        let also: Vec<(String, u64)> = faults
            .iter()
            .filter(|(f, _)| ALSO.iter().any(|(a, _)| a == f))
            .cloned()
            .collect();
        let rows = errors
            .iter()
            .enumerate()
            .map(|(e, (error, seen))| {
                let mut explained_by: BTreeMap<String, u64> = faults
                    .iter()
                    .enumerate()
                    .filter_map(|(f, (fault, _))| {
                        let n = flows[e][f];
                        (n > 0).then(|| (fault.clone(), n))
                    })
                    .collect();
                let mut left = seen - explained_by.values().sum::<u64>();
                for (fault, count) in &also {
                    if ALSO.contains(&(fault.as_str(), error.as_str())) && left > 0 {
                        let n = left.min(*count);
                        *explained_by.entry(fault.clone()).or_default() += n;
                        left -= n;
                    }
                }
                let explained: u64 = explained_by.values().sum();
                Row {
                    error: error.clone(),
                    seen: *seen,
                    explained_by,
                    unexplained: seen - explained,
                }
            })
            .collect();
        Reconciliation { injected, rows }
    }

    /// Errors nothing explains, by kind (those that fail the run).
    pub fn unexplained(&self) -> BTreeMap<String, u64> {
        self.rows
            .iter()
            .filter(|r| r.unexplained > 0)
            .map(|r| (r.error.clone(), r.unexplained))
            .collect()
    }
}

/// Whether fault kind `fault` can explain error kind `error`.
pub fn explains(fault: &str, error: &str) -> bool {
    EXPLAINS
        .iter()
        .any(|(e, faults)| *e == error && faults.contains(&fault))
}

/// The most errors explained: a maximum flow from each fault's count, through the edges of
/// [`EXPLAINS`], to each error's count (Edmonds–Karp; the graph has a few dozen nodes).
/// Returns `flow[error][fault]`.
fn assign(errors: &[(String, u64)], faults: &[(String, u64)]) -> Vec<Vec<u64>> {
    // Nodes: source, faults, errors, sink.
    let (nf, ne) = (faults.len(), errors.len());
    let n = nf + ne + 2;
    let (source, sink) = (0, n - 1);
    let fault_node = |f: usize| 1 + f;
    let error_node = |e: usize| 1 + nf + e;
    let mut cap = vec![vec![0u64; n]; n];
    for (f, (fault, count)) in faults.iter().enumerate() {
        cap[source][fault_node(f)] = if UNBOUNDED.contains(&fault.as_str()) && *count > 0 {
            u64::MAX / 4
        } else {
            *count
        };
        for (e, (error, _)) in errors.iter().enumerate() {
            if explains(fault, error) {
                cap[fault_node(f)][error_node(e)] = u64::MAX / 4;
            }
        }
    }
    for (e, (_, seen)) in errors.iter().enumerate() {
        cap[error_node(e)][sink] = *seen;
    }
    let mut flow = vec![vec![0u64; n]; n];
    loop {
        // Breadth-first search for an augmenting path in the residual graph.
        let mut prev = vec![usize::MAX; n];
        prev[source] = source;
        let mut queue = std::collections::VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for v in 0..n {
                let residual = cap[u][v] - flow[u][v] + flow[v][u];
                if prev[v] == usize::MAX && residual > 0 {
                    prev[v] = u;
                    queue.push_back(v);
                }
            }
        }
        if prev[sink] == usize::MAX {
            break;
        }
        let mut bottleneck = u64::MAX;
        let mut v = sink;
        while v != source {
            let u = prev[v];
            bottleneck = bottleneck.min(cap[u][v] - flow[u][v] + flow[v][u]);
            v = u;
        }
        let mut v = sink;
        while v != source {
            let u = prev[v];
            // Cancel reverse flow first, then add forward flow.
            let back = flow[v][u].min(bottleneck);
            flow[v][u] -= back;
            flow[u][v] += bottleneck - back;
            v = u;
        }
    }
    (0..ne)
        .map(|e| {
            (0..nf)
                .map(|f| flow[fault_node(f)][error_node(e)])
                .collect()
        })
        .collect()
}

impl fmt::Display for Reconciliation {
    /// The table: what each backend injected, then each error kind with what explains it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Faults the servers injected during the run:")?;
        if self.injected.iter().all(|i| i.count == 0) {
            writeln!(f, "  none")?;
        }
        for i in self.injected.iter().filter(|i| i.count > 0) {
            let window = if UNBOUNDED.contains(&i.fault.as_str()) {
                " (windows: the kernel refuses each connect)"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:<18} {:>8}  {} on {}{window}",
                i.fault, i.count, i.listener, i.backend
            )?;
        }
        writeln!(f, "Errors reconciled:")?;
        if self.rows.is_empty() {
            writeln!(f, "  none seen")?;
        }
        writeln!(
            f,
            "  {:<18} {:>8} {:>10} {:>12}  explained by",
            "error", "seen", "explained", "unexplained"
        )?;
        for r in &self.rows {
            let by: Vec<String> = r
                .explained_by
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            writeln!(
                f,
                "  {:<18} {:>8} {:>10} {:>12}  {}",
                r.error,
                r.seen,
                r.seen - r.unexplained,
                r.unexplained,
                if by.is_empty() {
                    "-".to_string()
                } else {
                    by.join(", ")
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    fn inj(list: &[(&str, u64)]) -> Vec<Injected> {
        list.iter()
            .map(|(f, n)| Injected {
                backend: "http://b/metrics".into(),
                listener: "echo@127.0.0.1:7007".into(),
                fault: f.to_string(),
                count: *n,
            })
            .collect()
    }

    /// The counters are read off a loopd page, labels and all.
    #[test]
    fn parses_loopd_s_family() {
        let page = "# HELP loopd_faults_injected_total x\n# TYPE loopd_faults_injected_total counter\n\
                    loopd_faults_injected_total{service=\"echo\",listener=\"127.0.0.1:7007\",fault=\"reset-after\"} 5\n\
                    loopd_faults_injected_total{service=\"echo\",listener=\"127.0.0.1:7007\",fault=\"delay\"} 12\n\
                    loopd_connections_active 3\n";
        let c = parse(page);
        assert_eq!(
            c.get(&("echo@127.0.0.1:7007".into(), "reset-after".into())),
            Some(&5)
        );
        assert_eq!(c.len(), 2);
        // An open refuse window counts as one; an open stop-accept window counts its
        // connections, not itself.
        let page = "loopd_faults_active{service=\"echo\",listener=\"127.0.0.1:7007\",fault=\"refuse\"} 1\n\
                    loopd_faults_active{service=\"echo\",listener=\"127.0.0.1:7007\",fault=\"stop-accept\"} 1\n";
        let c = parse(page);
        assert_eq!(c.len(), 1);
        assert_eq!(c.keys().next().unwrap().1, "refuse");
    }

    /// No fault explains more errors than it injected, and what is left is unexplained.
    #[test]
    fn a_count_explains_at_most_itself() {
        let r = Reconciliation::new(inj(&[("reset-after", 3)]), &errors(&[("reset", 5)]));
        assert_eq!(r.rows[0].unexplained, 2);
        assert_eq!(r.rows[0].explained_by.get("reset-after"), Some(&3));
        assert_eq!(r.unexplained(), errors(&[("reset", 2)]));
    }

    /// A fault that can explain two kinds is spent where nothing else can explain: the
    /// assignment is the best possible, not first come first served.
    #[test]
    fn the_assignment_is_a_maximum() {
        // close-before-reply explains reset or unexpected_close; reset-after only reset.
        let r = Reconciliation::new(
            inj(&[("close-before-reply", 2), ("reset-after", 2)]),
            &errors(&[("reset", 2), ("unexpected_close", 2)]),
        );
        assert!(r.unexplained().is_empty(), "{r}");
    }

    /// A corrupted datagram is both a mismatch and a loss: one injection explains one of each.
    #[test]
    fn a_corrupted_datagram_is_a_mismatch_and_a_loss() {
        let r = Reconciliation::new(
            inj(&[("corrupt", 3)]),
            &errors(&[("mismatch", 3), ("loss", 3)]),
        );
        assert!(r.unexplained().is_empty(), "{r}");
        let r = Reconciliation::new(
            inj(&[("corrupt", 3)]),
            &errors(&[("mismatch", 3), ("loss", 4)]),
        );
        assert_eq!(r.unexplained(), errors(&[("loss", 1)]));
    }

    /// An error no fault kind can explain stays unexplained, whatever was injected.
    #[test]
    fn unrelated_faults_explain_nothing() {
        let r = Reconciliation::new(inj(&[("corrupt", 100)]), &errors(&[("reset", 1)]));
        assert_eq!(r.unexplained(), errors(&[("reset", 1)]));
    }

    /// Every fault kind loopd has can explain some error kind in the table, but slow-close,
    /// which only makes a close slower (loopd-bench closes first and waits for nothing).
    #[test]
    fn every_fault_kind_explains_something() {
        for kind in loopd::fault::KINDS
            .into_iter()
            .filter(|k| k.name() != "slow-close")
        {
            assert!(
                EXPLAINS
                    .iter()
                    .any(|(_, faults)| faults.contains(&kind.name())),
                "{kind} explains nothing"
            );
        }
        for (error, _) in EXPLAINS {
            let known =
                loopd_bench_error_names().contains(error) || ["loss", "late"].contains(error);
            assert!(known, "{error} is not an error kind loopd-bench counts");
        }
    }

    fn loopd_bench_error_names() -> Vec<&'static str> {
        crate::errors::ErrorKind::ALL
            .iter()
            .map(|k| k.name())
            .collect()
    }
}
