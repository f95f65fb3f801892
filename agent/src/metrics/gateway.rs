//! Gateway families: requests by service and verdict, and request latency
//! per service. Label values come from the policy (service ids) and a
//! fixed set (verdicts), so their number is bounded.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{Exposition, Histogram, Kind, LATENCY_BUCKETS, expo, label, lock};

/// Few services and four verdicts: small lists, searched without
/// allocating on every request.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    requests: Mutex<Vec<(String, String, u64)>>,
    latency: Mutex<Vec<(String, Arc<Histogram>)>>,
}

impl GatewayMetrics {
    /// One request: `verdict` is `allow`, `deny`, `audit` or
    /// `approval_required`; `latency` runs to the end of the response.
    pub fn record(&self, service: &str, verdict: &str, latency: Duration) {
        {
            let mut v = lock(&self.requests);
            match v.iter_mut().find(|(s, d, _)| s == service && d == verdict) {
                Some((_, _, n)) => *n += 1,
                None => v.push((label(service), label(verdict), 1)),
            }
        }
        let h = {
            let mut v = lock(&self.latency);
            match v.iter().find(|(s, _)| s == service) {
                Some((_, h)) => h.clone(),
                None => {
                    let h = Arc::new(Histogram::default());
                    v.push((label(service), h.clone()));
                    h
                }
            }
        };
        h.observe(latency);
    }

    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "palisade_gateway_requests_total",
            "Requests through the L7 gateway by service and verdict.",
            Kind::Counter,
        );
        let mut requests = lock(&self.requests).clone();
        requests.sort();
        for (service, verdict, n) in &requests {
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
        let mut latency = lock(&self.latency).clone();
        latency.sort_by(|a, b| a.0.cmp(&b.0));
        for (service, h) in &latency {
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
