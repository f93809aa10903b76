//! The demo's traffic: a seeded plan of orders, fired over real HTTP in two phases.
//!
//! First a steady stream at a fixed rate with a few clients, then the flash sale: the
//! rest of the orders at once, with many clients, most of them for the one product with
//! little stock. A share of the orders name products that do not exist: the poison.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::Accepted;
use crate::inventory::{Catalogue, FLASH_SALE_SKU};
use crate::order::OrderRequest;
use crate::progress::Sent;

/// Share of flash-sale orders that go for the flash-sale product.
const FLASH_SALE_SHARE: f64 = 0.7;

/// The shape of the traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Orders in all.
    pub orders: usize,
    /// Share of the orders sent in the flash-sale burst, 0.0 to 1.0.
    pub spike_share: f64,
    /// Orders per second before the burst.
    pub steady_rate: u32,
    /// Requests in flight before the burst.
    pub steady_clients: usize,
    /// Requests in flight during the burst.
    pub spike_clients: usize,
    /// Share of orders for products that do not exist, 0.0 to 1.0.
    pub poison_rate: f64,
    /// Seed of the plan.
    pub seed: u64,
}

/// One planned order.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What is sent.
    pub request: OrderRequest,
    /// It names a product that does not exist.
    pub poison: bool,
}

/// What the API answered to one order.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The order as planned.
    pub planned: Planned,
    /// The id from a `202 Accepted`, or what went wrong.
    pub answer: Result<Uuid, String>,
}

/// The orders of one run: the steady ones, then the flash-sale ones.
pub fn plan(traffic: &Traffic, catalogue: &Catalogue) -> (Vec<Planned>, Vec<Planned>) {
    let mut rng = StdRng::seed_from_u64(traffic.seed);
    let regular = catalogue.regular_skus();
    let spike = spike_count(traffic);
    let customers = (traffic.orders * 2 / 3).max(1);

    let mut all: Vec<Planned> = (0..traffic.orders)
        .map(|n| {
            let in_spike = n >= traffic.orders - spike;
            one_order(&mut rng, traffic, &regular, in_spike, customers)
        })
        .collect();
    let flash_sale = all.split_off(traffic.orders - spike);
    (all, flash_sale)
}

fn spike_count(traffic: &Traffic) -> usize {
    let share = traffic.spike_share.clamp(0.0, 1.0);
    // Rounded share of a count: exact enough, and never above `orders`.
    ((traffic.orders as f64 * share).round() as usize).min(traffic.orders)
}

fn one_order(
    rng: &mut StdRng,
    traffic: &Traffic,
    regular: &[&str],
    in_spike: bool,
    customers: usize,
) -> Planned {
    let poison = rng.random_bool(traffic.poison_rate.clamp(0.0, 1.0));
    let sku = if poison {
        format!("DISCONTINUED-{:03}", rng.random_range(0..1000))
    } else if regular.is_empty() || (in_spike && rng.random_bool(FLASH_SALE_SHARE)) {
        FLASH_SALE_SKU.to_owned()
    } else {
        regular[rng.random_range(0..regular.len())].to_owned()
    };
    // One per customer in the flash sale; a few of anything else.
    let quantity = if sku == FLASH_SALE_SKU {
        1
    } else {
        rng.random_range(1..=3)
    };

    let customer = format!("customer-{}", rng.random_range(0..customers));
    Planned {
        request: OrderRequest {
            sku,
            quantity,
            customer,
        },
        poison,
    }
}

/// Sends the orders to `base` (`http://host:port`): `steady` at the steady rate, then
/// `spike` all at once.
pub async fn fire(
    base: &str,
    traffic: &Traffic,
    (steady, spike): (Vec<Planned>, Vec<Planned>),
    sent: Arc<Sent>,
) -> Vec<Fired> {
    let client = reqwest::Client::new();
    let url = format!("{base}/orders");
    let start = Instant::now();
    let interval = Duration::from_secs(1) / traffic.steady_rate.max(1);

    let paced = steady.into_iter().enumerate().map(|(n, planned)| {
        let at = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
        send(&client, &url, planned, Some(at), &sent)
    });
    let mut fired: Vec<Fired> = futures::stream::iter(paced)
        .buffer_unordered(traffic.steady_clients.max(1))
        .collect()
        .await;

    let burst = spike
        .into_iter()
        .map(|planned| send(&client, &url, planned, None, &sent));
    let burst: Vec<Fired> = futures::stream::iter(burst)
        .buffer_unordered(traffic.spike_clients.max(1))
        .collect()
        .await;
    fired.extend(burst);
    fired
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    planned: Planned,
    at: Option<Instant>,
    sent: &Sent,
) -> Fired {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
    let answer = post(client, url, &planned.request).await;

    let counter = if answer.is_ok() {
        &sent.accepted
    } else {
        &sent.refused
    };
    counter.fetch_add(1, Ordering::Relaxed);
    Fired { planned, answer }
}

async fn post(client: &reqwest::Client, url: &str, order: &OrderRequest) -> Result<Uuid, String> {
    let response = client
        .post(url)
        .json(order)
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;

    let status = response.status();
    if status != StatusCode::ACCEPTED {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {body}"));
    }
    let accepted: Accepted = response
        .json()
        .await
        .map_err(|e| format!("unreadable 202 body: {e}"))?;
    Ok(accepted.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(orders: usize) -> Traffic {
        Traffic {
            orders,
            spike_share: 0.4,
            steady_rate: 1000,
            steady_clients: 4,
            spike_clients: 16,
            poison_rate: 0.05,
            seed: 9,
        }
    }

    #[test]
    fn the_plan_splits_into_steady_and_spike_and_is_reproducible() {
        let catalogue = Catalogue::sized_for(1000);

        let (steady, spike) = plan(&traffic(1000), &catalogue);
        let (again, _) = plan(&traffic(1000), &catalogue);

        assert_eq!((steady.len(), spike.len()), (600, 400));
        let skus = |p: &[Planned]| p.iter().map(|o| o.request.sku.clone()).collect::<Vec<_>>();
        assert_eq!(skus(&steady), skus(&again));
    }

    #[test]
    fn the_spike_is_mostly_the_flash_sale_product_and_poison_is_unknown() {
        let catalogue = Catalogue::sized_for(2000);

        let (steady, spike) = plan(&traffic(2000), &catalogue);

        let flash = spike
            .iter()
            .filter(|o| o.request.sku == FLASH_SALE_SKU)
            .count();
        assert!(flash > spike.len() / 2, "{flash} of {}", spike.len());
        assert!(!steady.iter().any(|o| o.request.sku == FLASH_SALE_SKU));
        let known = |sku: &str| catalogue.products.iter().any(|p| p.sku == sku);
        assert!(
            steady
                .iter()
                .chain(&spike)
                .all(|o| o.poison != known(&o.request.sku))
        );
    }
}
