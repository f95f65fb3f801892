//! Gateway families: requests by service and verdict, and request latency
//! per service. Label values come from the policy (service ids) and a
//! fixed set (verdicts), so their number is bounded.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use super::{Exposition, Histogram, Kind, LATENCY_BUCKETS, expo, label, lock};

#[derive(Debug, Default)]
pub struct GatewayMetrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl GatewayMetrics {
    /// One request: `verdict` is `allow`, `deny`, `audit` or
    /// `approval_required`; `latency` runs to the end of the response.
    pub fn record(&self, service: &str, verdict: &str, latency: Duration) {
        *lock(&self.requests)
            .entry((label(service), label(verdict)))
            .or_default() += 1;
        lock(&self.latency)
            .entry(label(service))
            .or_default()
            .observe(latency);
    }

    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "palisade_gateway_requests_total",
            "Requests through the L7 gateway by service and verdict.",
            Kind::Counter,
        );
        for ((service, verdict), n) in lock(&self.requests).iter() {
            out.sample(
                "palisade_gateway_requests_total",
                &[("service", service), ("verdict", verdict)],
                *n,
            );
        }
        out.family(
            "palisade_gateway_request_duration_seconds",
            "Time from a gateway request's arrival to the end of its response.",
            Kind::Histogram,
        );
        let name = "palisade_gateway_request_duration_seconds";
        for (service, h) in lock(&self.latency).iter() {
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i].load(std::sync::atomic::Ordering::Relaxed);
                out.sample_f(
                    &format!("{name}_bucket"),
                    &[("service", service), ("le", &expo::float(*bound))],
                    cumulative as f64,
                );
            }
            cumulative +=
                h.buckets[LATENCY_BUCKETS.len()].load(std::sync::atomic::Ordering::Relaxed);
            out.sample(
                &format!("{name}_bucket"),
                &[("service", service), ("le", "+Inf")],
                cumulative,
            );
            out.sample_f(
                &format!("{name}_sum"),
                &[("service", service)],
                h.sum_nanos.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9,
            );
            out.sample(
                &format!("{name}_count"),
                &[("service", service)],
                h.count.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_latency_per_service() {
        let m = GatewayMetrics::default();
        m.record("stripe", "allow", Duration::from_micros(80));
        m.record("stripe", "deny", Duration::from_millis(3));
        m.record("stripe", "allow", Duration::from_micros(200));
        let mut out = Exposition::new();
        m.render(&mut out);
        let text = out.finish();
        for line in [
            "palisade_gateway_requests_total{service=\"stripe\",verdict=\"allow\"} 2",
            "palisade_gateway_requests_total{service=\"stripe\",verdict=\"deny\"} 1",
            "palisade_gateway_request_duration_seconds_bucket{service=\"stripe\",le=\"0.0001\"} 1",
            "palisade_gateway_request_duration_seconds_bucket{service=\"stripe\",le=\"0.005\"} 3",
            "palisade_gateway_request_duration_seconds_count{service=\"stripe\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
    }
}
