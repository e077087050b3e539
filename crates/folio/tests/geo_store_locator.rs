//! A store locator through the embedded API: 10,000 stores with a 2dsphere index. `$near` with
//! `$maxDistance` must return exactly the stores a brute-force great-circle computation finds, in
//! distance order, while examining a bounded number of index keys (explain's executionStats);
//! `$geoWithin` a polygon with a hole and `$geoNear` must agree with brute force on random data.
//! Hashed equality must use its index.

use bson::{Bson, Document, doc};
use folio::api::{Client, Collection, IndexModel};
use rand::{Rng, SeedableRng};

const EARTH_RADIUS_M: f64 = 6_378_100.0;

/// Great-circle distance in meters between (lng, lat) points (haversine, for the reference).
fn meters(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2) = (a.1.to_radians(), b.1.to_radians());
    let dlat = la2 - la1;
    let dlng = (b.0 - a.0).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * h.sqrt().atan2((1.0 - h).sqrt()) * EARTH_RADIUS_M
}

struct Store {
    id: i32,
    at: (f64, f64),
}

fn setup() -> (Client, Collection<Document>, Vec<Store>) {
    let client = Client::in_memory().unwrap();
    let coll: Collection<Document> = client.database("geo").collection("stores");
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    // Stores spread over a region around Paris, about 200 km across.
    let stores: Vec<Store> = (0..10_000)
        .map(|id| Store { id, at: (rng.random_range(1.0..4.0), rng.random_range(48.0..50.0)) })
        .collect();
    let docs: Vec<Document> = stores
        .iter()
        .map(|s| {
            doc! {
                "_id": s.id,
                "loc": { "type": "Point", "coordinates": [s.at.0, s.at.1] },
                "chain": format!("chain{}", s.id % 7),
            }
        })
        .collect();
    coll.insert_many(&docs).run().unwrap();
    coll.create_index(IndexModel::builder().keys(doc! { "loc": "2dsphere" }).build())
        .run()
        .unwrap();
    (client, coll, stores)
}

fn ids(docs: impl Iterator<Item = Document>) -> Vec<i32> {
    docs.map(|d| d.get_i32("_id").unwrap()).collect()
}

#[test]
fn store_locator_agrees_with_brute_force() {
    let (client, coll, stores) = setup();
    let mut rng = rand::rngs::StdRng::seed_from_u64(61);

    // $near with $maxDistance: the stores within the radius, nearest first.
    for _ in 0..10 {
        let here = (rng.random_range(1.5..3.5), rng.random_range(48.5..49.5));
        let radius = rng.random_range(1_000.0..8_000.0);
        let filter = doc! { "loc": { "$near": {
            "$geometry": { "type": "Point", "coordinates": [here.0, here.1] },
            "$maxDistance": radius,
        } } };
        let got: Vec<Document> =
            coll.find(filter.clone()).run().unwrap().map(Result::unwrap).collect();
        let mut want: Vec<(f64, i32)> = stores
            .iter()
            .map(|s| (meters(here, s.at), s.id))
            .filter(|(d, _)| *d <= radius)
            .collect();
        want.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Boundary cases (within a millimeter) may differ by rounding; none occur here.
        assert!(want.iter().all(|(d, _)| (d - radius).abs() > 1e-3));
        assert_eq!(ids(got.into_iter()), want.iter().map(|(_, id)| *id).collect::<Vec<_>>());

        // The scan examines the keys of the covering cells only: a small fraction of 10,000.
        let explain = client
            .database("geo")
            .run_command(doc! {
                "explain": { "find": "stores", "filter": filter },
                "verbosity": "executionStats",
            })
            .run()
            .unwrap();
        let stats = explain.get_document("executionStats").unwrap();
        let keys = stats.get_i64("totalKeysExamined").unwrap();
        let returned = stats.get_i64("nReturned").unwrap();
        eprintln!("$near radius {radius:.0} m: {returned} results, {keys} keys examined");
        assert_eq!(returned as usize, want.len());
        assert!(keys >= returned, "{keys} keys for {returned} results");
        assert!(keys <= 4 * returned.max(25), "{keys} keys examined for {returned} results");
        let plan =
            explain.get_document("queryPlanner").unwrap().get_document("winningPlan").unwrap();
        assert_eq!(plan.get_str("stage").unwrap(), "GEO_NEAR_2DSPHERE");
    }

    // $geoWithin a polygon with a hole (planar edges between the vertices, see
    // docs/compatibility.md; the reference tests the same rings).
    let outer = [(1.5, 48.5), (3.5, 48.5), (3.5, 49.5), (1.5, 49.5), (1.5, 48.5)];
    let hole = [(2.0, 48.8), (3.0, 48.8), (3.0, 49.2), (2.0, 49.2), (2.0, 48.8)];
    let ring = |r: &[(f64, f64)]| {
        Bson::Array(r.iter().map(|p| Bson::Array(vec![p.0.into(), p.1.into()])).collect())
    };
    let polygon = doc! { "type": "Polygon", "coordinates": [ring(&outer), ring(&hole)] };
    let inside = |p: (f64, f64), r: &[(f64, f64)]| {
        let (xs, ys): (Vec<f64>, Vec<f64>) = r.iter().copied().unzip();
        let (x0, x1) = (
            xs.iter().copied().fold(f64::MAX, f64::min),
            xs.iter().copied().fold(f64::MIN, f64::max),
        );
        let (y0, y1) = (
            ys.iter().copied().fold(f64::MAX, f64::min),
            ys.iter().copied().fold(f64::MIN, f64::max),
        );
        p.0 >= x0 && p.0 <= x1 && p.1 >= y0 && p.1 <= y1
    };
    let hole_interior = |p: (f64, f64)| p.0 > 2.0 && p.0 < 3.0 && p.1 > 48.8 && p.1 < 49.2;
    let got = ids(coll
        .find(doc! { "loc": { "$geoWithin": { "$geometry": polygon } } })
        .sort(doc! { "_id": 1 })
        .run()
        .unwrap()
        .map(Result::unwrap));
    let want: Vec<i32> = stores
        .iter()
        .filter(|s| inside(s.at, &outer) && !hole_interior(s.at))
        .map(|s| s.id)
        .collect();
    assert!(want.len() > 1000, "the polygon should hold many stores: {}", want.len());
    assert_eq!(got, want);

    // $geoNear with a query and a distance window agrees with brute force, distances included.
    let here = (2.35, 48.85);
    let got: Vec<Document> = coll
        .aggregate([doc! { "$geoNear": {
            "near": { "type": "Point", "coordinates": [here.0, here.1] },
            "distanceField": "dist",
            "minDistance": 2_000,
            "maxDistance": 9_000,
            "query": { "chain": "chain3" },
            "key": "loc",
        } }])
        .run()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut want: Vec<(f64, i32)> = stores
        .iter()
        .filter(|s| s.id % 7 == 3)
        .map(|s| (meters(here, s.at), s.id))
        .filter(|(d, _)| (2_000.0..=9_000.0).contains(d))
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(!want.is_empty());
    assert_eq!(ids(got.iter().cloned()), want.iter().map(|(_, id)| *id).collect::<Vec<_>>());
    for (d, (w, _)) in got.iter().zip(&want) {
        let dist = d.get_f64("dist").unwrap();
        assert!((dist - w).abs() < 0.01, "distance {dist} vs {w}");
    }
}

#[test]
fn hashed_equality_uses_the_index() {
    let client = Client::in_memory().unwrap();
    let coll: Collection<Document> = client.database("geo").collection("users");
    let docs: Vec<Document> =
        (0..1000).map(|i| doc! { "_id": i, "email": format!("u{i}@x") }).collect();
    coll.insert_many(&docs).run().unwrap();
    coll.create_index(IndexModel::builder().keys(doc! { "email": "hashed" }).build())
        .run()
        .unwrap();
    let found = ids(coll.find(doc! { "email": "u42@x" }).run().unwrap().map(Result::unwrap));
    assert_eq!(found, [42]);
    let explain = client
        .database("geo")
        .run_command(doc! { "explain": { "find": "users", "filter": { "email": "u42@x" } } })
        .run()
        .unwrap();
    let plan = explain.get_document("queryPlanner").unwrap().get_document("winningPlan").unwrap();
    let scan = plan.get_document("inputStage").unwrap();
    assert_eq!(scan.get_str("stage").unwrap(), "IXSCAN");
    assert_eq!(scan.get_document("keyPattern").unwrap(), &doc! { "email": "hashed" });
    let stats = explain.get_document("executionStats").unwrap();
    assert_eq!(stats.get_i64("totalKeysExamined").unwrap(), 1);
    assert_eq!(stats.get_i64("totalDocsExamined").unwrap(), 1);
}
