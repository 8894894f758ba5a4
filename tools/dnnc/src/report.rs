//! The `--timing` and `--stats` reports, in mlir-opt's layout.

use dnnc_passes::{PassRecord, StatValue, Statistic};
use std::fmt::Write;
use std::time::Duration;

const RULE: &str =
    "===-------------------------------------------------------------------------===";

fn banner(out: &mut String, title: &str) {
    let pad = (RULE.len().saturating_sub(title.len())) / 2;
    let _ = writeln!(out, "{RULE}\n{}{title}\n{RULE}", " ".repeat(pad));
}

/// A timing table: `(name, time, nested)` rows, nested rows indented under their pass.
pub fn timing(rows: &[(String, Duration, bool)]) -> String {
    let total: Duration = rows.iter().map(|r| r.1).sum();
    let mut out = String::new();
    banner(&mut out, "... Execution time report ...");
    let _ = writeln!(
        out,
        "  Total Execution Time: {:.4} seconds\n",
        total.as_secs_f64()
    );
    let _ = writeln!(out, "  ----Wall Time----  ----Name----");
    let pct = |d: Duration| {
        if total.is_zero() {
            0.0
        } else {
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        }
    };
    for (name, d, nested) in rows {
        let indent = if *nested { "  " } else { "" };
        let _ = writeln!(
            out,
            "    {:.4} ({:5.1}%)  {indent}{name}",
            d.as_secs_f64(),
            pct(*d)
        );
    }
    let _ = writeln!(out, "    {:.4} (100.0%)  Total", total.as_secs_f64());
    out
}

/// Sums the records of the same pipeline run on several inputs (split files), pass by pass.
pub fn merge(runs: &[Vec<PassRecord>]) -> Vec<PassRecord> {
    let mut merged: Vec<PassRecord> = Vec::new();
    for run in runs {
        for (i, r) in run.iter().enumerate() {
            if i >= merged.len() {
                merged.push(r.clone());
                continue;
            }
            let m = &mut merged[i];
            m.time += r.time;
            m.verify_time += r.verify_time;
            for s in &r.stats {
                match m.stats.iter_mut().find(|x| x.name == s.name) {
                    Some(Statistic {
                        value: StatValue::Count(c),
                        ..
                    }) => {
                        if let StatValue::Count(n) = s.value {
                            *c += n;
                        }
                    }
                    Some(_) => {}
                    None => m.stats.push(s.clone()),
                }
            }
        }
    }
    merged
}

/// The statistics of each pass.
pub fn stats(records: &[PassRecord]) -> String {
    let mut out = String::new();
    banner(&mut out, "... Pass statistics report ...");
    for r in records {
        let _ = writeln!(out, "{}", r.name);
        if r.stats.is_empty() {
            let _ = writeln!(out, "  (no statistics)");
        }
        let width = r
            .stats
            .iter()
            .map(|s| s.value.to_string().len())
            .max()
            .unwrap_or(0);
        for s in &r.stats {
            let _ = writeln!(
                out,
                "  (S) {:>width$} {} - {}",
                s.value.to_string(),
                s.name,
                s.description
            );
        }
    }
    out
}
