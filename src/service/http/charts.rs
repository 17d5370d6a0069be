//! Server-rendered SVG charts for the statistics page: no script, no
//! library, readable without colour (every bar carries its number, every
//! chart a title for screen readers).

use crate::stats::{ApproverStats, Bucket, QueuePoint};
use maud::{Markup, html};

const WIDTH: i64 = 640;
const HEIGHT: i64 = 180;
/// Room for the labels under columns and left of horizontal bars.
const GUTTER: i64 = 24;
const LABEL: i64 = 140;

/// The upper bound of a time-to-decision bucket, as its column label.
fn bucket_label(b: &Bucket) -> String {
    match b.le_ms {
        None => "longer".into(),
        Some(ms) if ms < 60_000 => format!("≤{}s", ms / 1000),
        Some(ms) if ms < 3_600_000 => format!("≤{}m", ms / 60_000),
        Some(ms) if ms < 86_400_000 => format!("≤{}h", ms / 3_600_000),
        Some(ms) => format!("≤{}d", ms / 86_400_000),
    }
}

/// How long decisions took: one column per bucket.
pub fn time_to_decision(buckets: &[Bucket]) -> Markup {
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(0).max(1) as i64;
    let n = buckets.len().max(1) as i64;
    let slot = WIDTH / n;
    let plot = HEIGHT - 2 * GUTTER;
    html! {
        svg.chart #chart-time-to-decision role="img" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            aria-label="Time to decision: how many decisions fell in each time bucket" {
            title { "Time to decision" }
            @for (i, b) in buckets.iter().enumerate() {
                @let h = b.count as i64 * plot / max;
                @let x = i as i64 * slot;
                rect.bar x=(x + 4) y=(GUTTER + plot - h) width=(slot - 8) height=(h) {
                    title { (bucket_label(b)) ": " (b.count) }
                }
                text x=(x + slot / 2) y=(GUTTER + plot - h - 4) text-anchor="middle" { (b.count) }
                text.axis x=(x + slot / 2) y=(HEIGHT - 6) text-anchor="middle" { (bucket_label(b)) }
            }
        }
    }
}

/// How many jobs waited at once: the deepest queue in each slice.
pub fn queue_depth(points: &[QueuePoint], since: &str, until: &str) -> Markup {
    let max = points.iter().map(|p| p.max_depth).max().unwrap_or(0).max(1) as i64;
    let n = points.len().max(1) as i64;
    let plot = HEIGHT - 2 * GUTTER;
    let mut path = format!("M0 {}", GUTTER + plot);
    for (i, p) in points.iter().enumerate() {
        let y = GUTTER + plot - p.max_depth as i64 * plot / max;
        let (x0, x1) = (i as i64 * WIDTH / n, (i as i64 + 1) * WIDTH / n);
        path.push_str(&format!(" L{x0} {y} L{x1} {y}"));
    }
    path.push_str(&format!(" L{WIDTH} {} Z", GUTTER + plot));
    html! {
        svg.chart #chart-queue-depth role="img" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            aria-label={ "Queue depth over time, at most " (max) " jobs waiting" } {
            title { "Queue depth over time" }
            path.area d=(path) {}
            text x="4" y=(GUTTER - 6) { "max " (points.iter().map(|p| p.max_depth).max().unwrap_or(0)) }
            text.axis x="0" y=(HEIGHT - 6) { (since) }
            text.axis x=(WIDTH) y=(HEIGHT - 6) text-anchor="end" { (until) }
        }
    }
}

/// Approvals and rejections per approver, flagged ones marked.
pub fn approvals_per_approver(people: &[ApproverStats]) -> Markup {
    let max = people
        .iter()
        .map(|p| p.approvals + p.rejections)
        .max()
        .unwrap_or(0)
        .max(1) as i64;
    let row = 22;
    let height = (people.len() as i64 * row + 8).max(row);
    let plot = WIDTH - LABEL - 60;
    html! {
        svg.chart #chart-approvers role="img" viewBox={ "0 0 " (WIDTH) " " (height) }
            aria-label="Approvals (and rejections) per approver" {
            title { "Approvals per approver" }
            @for (i, p) in people.iter().enumerate() {
                @let y = i as i64 * row + 4;
                @let a = p.approvals as i64 * plot / max;
                @let r = p.rejections as i64 * plot / max;
                text.axis x=(LABEL - 6) y=(y + 15) text-anchor="end" {
                    (p.approver) @if p.rubber_stamp.is_some() { " ⚑" }
                }
                rect.bar.(if p.rubber_stamp.is_some() { "flagged" } else { "" }) x=(LABEL) y=(y) width=(a) height=(row - 6) {
                    title { (p.approver) ": " (p.approvals) " approvals" }
                }
                rect.bar.rejected x=(LABEL + a) y=(y) width=(r) height=(row - 6) {
                    title { (p.approver) ": " (p.rejections) " rejections" }
                }
                text x=(LABEL + a + r + 6) y=(y + 15) { (p.approvals) " / " (p.rejections) }
            }
        }
    }
}
