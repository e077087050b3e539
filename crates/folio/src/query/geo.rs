//! Geospatial values and predicates: GeoJSON and legacy coordinate pairs, `$geoWithin`,
//! `$geoIntersects`, `$near` and `$nearSphere`, and the cell coverings that bound index scans.
//!
//! # Values
//!
//! A stored location is either a GeoJSON object (`{type: "Point", coordinates: [lng, lat]}`,
//! `LineString`, `Polygon` with holes, the `Multi*` types and `GeometryCollection`) or a *legacy
//! coordinate pair*: an array of at least two numbers `[x, y]` or a document whose first two
//! values are numbers (`{lng: x, lat: y}`). An array of locations (`[[1, 2], [3, 4]]`, or of GeoJSON
//! objects) holds several locations. GeoJSON is validated as MongoDB validates it: coordinates in
//! range (longitude in [-180, 180], latitude in [-90, 90]), rings closed with at least four
//! points and three distinct vertices, and holes inside the outer ring.
//!
//! # Predicates
//!
//! Containment and intersection are decided by the georust `geo` crate's DE-9IM relate on
//! longitude/latitude coordinates, so a polygon's edges are straight lines in that plane, whereas
//! MongoDB's `$geometry` polygons have geodesic edges: the two agree except near the edges of
//! polygons that span many degrees (a difference listed in docs/compatibility.md). Distances on
//! the sphere are great-circle angles between unit vectors (S2's `S1Angle`), times MongoDB's
//! earth radius of 6,378,100 m for GeoJSON points; legacy `$nearSphere` and `$centerSphere`
//! work in radians; legacy `$near`, `$center`, `$box` and `$polygon` in flat coordinates.
//! The distance from a point to a line or polygon is the distance to its nearest vertex (zero
//! when the point lies inside it); MongoDB measures to the nearest edge point.
//!
//! # Coverings
//!
//! A 2dsphere index keys each location by S2 cells (the `s2` crate): a point by its cell at level
//! [`FINEST_LEVEL`], any other geometry by a covering of its bounding latitude/longitude
//! rectangle with at most [`MAX_INDEX_CELLS`] cells. A query region is covered the same way (a
//! spherical cap for `$centerSphere` and `$near` with `$maxDistance`), and a stored key
//! intersects a query cell exactly when it is the cell, a descendant (one range of cell ids) or an
//! ancestor (a point): so the scan visits a bounded set of cells, and the predicate re-checks every
//! candidate. A 2d index keys points by a Morton code of the flat coordinates, `bits` (26 by
//! default) per coordinate over the index's `[min, max)` ([-180, 180) by default), covered by a
//! quadtree decomposition ([`FlatGrid`]).

use bson::{Bson, Document};
use geo::{
    Geometry, GeometryCollection, Intersects, LineString, MultiLineString, MultiPoint,
    MultiPolygon, Point, Polygon, Relate,
};
use s2::cellid::CellID;
use s2::latlng::LatLng;
use s2::region::RegionCoverer;
use s2::s1::{Angle, Rad};

pub use geo::{Coord, Geometry as GeoGeometry};

use crate::error::Result;
use crate::{bail, err};

/// MongoDB's earth radius (`kRadiusOfEarthInMeters`), which converts meters to radians.
pub const EARTH_RADIUS_METERS: f64 = 6378.1 * 1000.0;

/// The S2 level points are indexed at (MongoDB's default `finestIndexedLevel`).
pub const FINEST_LEVEL: u8 = 23;

/// The most cells a stored geometry is indexed by.
pub const MAX_INDEX_CELLS: usize = 8;

/// The most cells a query region is covered by.
pub const MAX_QUERY_CELLS: usize = 20;

/// Bits per dimension of a 2d index key by default (MongoDB's default `bits`).
pub const FLAT_BITS: u32 = 26;

/// One stored location: a geometry and whether it was a legacy pair (flat coordinates).
#[derive(Clone, Debug)]
pub struct Shape {
    /// The geometry, in (longitude, latitude) or (x, y).
    pub geom: Geometry<f64>,
    /// Whether the location was a legacy coordinate pair rather than GeoJSON.
    pub legacy: bool,
}

/// The locations of a stored value (see the module documentation), or why it is not one.
pub fn shapes_of(v: &Bson) -> std::result::Result<Vec<Shape>, String> {
    if let Some(c) = legacy_pair(v) {
        return Ok(vec![Shape { geom: Geometry::Point(Point(c)), legacy: true }]);
    }
    match v {
        Bson::Document(d) if d.contains_key("type") => {
            Ok(vec![Shape { geom: parse_geojson(d)?, legacy: false }])
        }
        Bson::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Bson::Array(_) | Bson::Document(_) => out.extend(shapes_of(item)?),
                    other => {
                        return Err(format!(
                            "Point must only contain numeric elements, found {}",
                            crate::doc::type_name(other)
                        ));
                    }
                }
            }
            Ok(out)
        }
        Bson::Document(_) => Err("Point must only contain numeric elements".to_string()),
        other => Err(format!(
            "geo element must be an array or object: {}",
            crate::doc::fmt::value_string(other)
        )),
    }
}

/// The values at a dotted path that may be locations: arrays of documents on the way are
/// descended into, but an array at the end is one value (a location may be an array).
pub fn values_at(doc: &Document, path: &str) -> Vec<Bson> {
    fn walk(v: &Bson, path: &[&str], out: &mut Vec<Bson>) {
        let Some((first, rest)) = path.split_first() else {
            out.push(v.clone());
            return;
        };
        match v {
            Bson::Document(d) => {
                if let Some(next) = d.get(*first) {
                    walk(next, rest, out);
                }
            }
            Bson::Array(items) => {
                for item in items.iter().filter(|i| matches!(i, Bson::Document(_))) {
                    walk(item, path, out);
                }
            }
            _ => {}
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    if let Some((first, rest)) = parts.split_first()
        && let Some(v) = doc.get(*first)
    {
        walk(v, rest, &mut out);
    }
    out
}

/// A legacy coordinate pair: an array or document whose first two values are numbers.
pub fn legacy_pair(v: &Bson) -> Option<Coord<f64>> {
    let mut nums = match v {
        Bson::Array(items) => Box::new(items.iter()) as Box<dyn Iterator<Item = &Bson>>,
        Bson::Document(d) if !d.contains_key("type") => Box::new(d.values()),
        _ => return None,
    };
    let x = number(nums.next()?)?;
    let y = number(nums.next()?)?;
    Some(Coord { x, y })
}

pub(crate) use crate::doc::compare::as_f64 as number;

/// Parses and validates a GeoJSON object.
pub fn parse_geojson(d: &Document) -> std::result::Result<Geometry<f64>, String> {
    let kind = match d.get("type") {
        Some(Bson::String(s)) => s.as_str(),
        _ => return Err("unknown GeoJSON type".to_string()),
    };
    if let Some(crs) = d.get("crs") {
        check_crs(crs)?;
    }
    if kind == "GeometryCollection" {
        let Some(Bson::Array(items)) = d.get("geometries") else {
            return Err("GeometryCollection geometries must be an array".to_string());
        };
        let mut out = Vec::new();
        for item in items {
            match item {
                Bson::Document(g) => out.push(parse_geojson(g)?),
                _ => return Err("Element geometries must be objects".to_string()),
            }
        }
        return Ok(Geometry::GeometryCollection(GeometryCollection(out)));
    }
    let Some(coords) = d.get("coordinates") else {
        return Err(format!("{kind} must have coordinates"));
    };
    let Bson::Array(coords) = coords else {
        return Err("coordinates must be an array".to_string());
    };
    Ok(match kind {
        "Point" => Geometry::Point(Point(position(coords)?)),
        "LineString" => Geometry::LineString(line(coords)?),
        "Polygon" => Geometry::Polygon(polygon(coords)?),
        "MultiPoint" => Geometry::MultiPoint(MultiPoint(
            coords
                .iter()
                .map(|c| Ok(Point(position(as_array(c)?)?)))
                .collect::<std::result::Result<_, String>>()?,
        )),
        "MultiLineString" => Geometry::MultiLineString(MultiLineString(
            coords
                .iter()
                .map(|c| line(as_array(c)?))
                .collect::<std::result::Result<_, String>>()?,
        )),
        "MultiPolygon" => Geometry::MultiPolygon(MultiPolygon(
            coords
                .iter()
                .map(|c| polygon(as_array(c)?))
                .collect::<std::result::Result<_, String>>()?,
        )),
        other => return Err(format!("unknown GeoJSON type: {other}")),
    })
}

fn check_crs(crs: &Bson) -> std::result::Result<(), String> {
    let name = match crs {
        Bson::Document(c) => c
            .get_document("properties")
            .ok()
            .and_then(|p| p.get_str("name").ok())
            .unwrap_or_default(),
        _ => "",
    };
    match name {
        "EPSG:4326" | "urn:ogc:def:crs:OGC:1.3:CRS84" | "urn:ogc:def:crs:EPSG::4326" => Ok(()),
        // Big polygons need MongoDB's strict-winding CRS, which Folio does not implement.
        "urn:x-mongodb:crs:strictwinding:EPSG:4326" => {
            Err("strictwinding (big polygon) CRS is not supported".to_string())
        }
        _ => Err("Unknown CRS name".to_string()),
    }
}

fn as_array(v: &Bson) -> std::result::Result<&Vec<Bson>, String> {
    match v {
        Bson::Array(a) => Ok(a),
        _ => Err("coordinates must be an array".to_string()),
    }
}

/// A GeoJSON position `[lng, lat]`, in range.
fn position(v: &[Bson]) -> std::result::Result<Coord<f64>, String> {
    if v.len() < 2 {
        return Err("Point must only contain numeric elements".to_string());
    }
    let (Some(x), Some(y)) = (number(&v[0]), number(&v[1])) else {
        return Err("Point must only contain numeric elements".to_string());
    };
    check_lng_lat(x, y)?;
    Ok(Coord { x, y })
}

/// MongoDB's range check of a spherical coordinate.
pub fn check_lng_lat(x: f64, y: f64) -> std::result::Result<(), String> {
    if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
        return Err(format!(
            "longitude/latitude is out of bounds, lng: {} lat: {}",
            fmt_num(x),
            fmt_num(y)
        ));
    }
    Ok(())
}

fn fmt_num(x: f64) -> String {
    crate::doc::fmt::value_string(&Bson::Double(x))
}

fn line(coords: &[Bson]) -> std::result::Result<LineString<f64>, String> {
    let pts: Vec<Coord<f64>> = coords
        .iter()
        .map(|c| position(as_array(c)?))
        .collect::<std::result::Result<_, String>>()?;
    if pts.len() < 2 {
        return Err(format!("GeoJSON LineString must have at least 2 vertices: {}", pts.len()));
    }
    Ok(LineString(pts))
}

fn ring(coords: &Bson) -> std::result::Result<LineString<f64>, String> {
    let pts: Vec<Coord<f64>> = as_array(coords)?
        .iter()
        .map(|c| position(as_array(c)?))
        .collect::<std::result::Result<_, String>>()?;
    if pts.len() < 4 {
        return Err(format!("Loop must have at least 4 vertices: {}", pts.len()));
    }
    if pts.first() != pts.last() {
        return Err("Loop is not closed, first vertex does not equal last vertex".to_string());
    }
    let mut distinct: Vec<Coord<f64>> = Vec::new();
    for p in &pts {
        if !distinct.contains(p) {
            distinct.push(*p);
        }
    }
    if distinct.len() < 3 {
        return Err("Loop must have at least 3 different vertices".to_string());
    }
    Ok(LineString(pts))
}

fn polygon(coords: &[Bson]) -> std::result::Result<Polygon<f64>, String> {
    let Some((outer, holes)) = coords.split_first() else {
        return Err("Polygon has no loops.".to_string());
    };
    let outer = ring(outer)?;
    let holes: Vec<LineString<f64>> =
        holes.iter().map(ring).collect::<std::result::Result<_, String>>()?;
    let shell = Polygon::new(outer.clone(), Vec::new());
    for (i, h) in holes.iter().enumerate() {
        if !h.0.iter().all(|c| shell.intersects(&Point(*c))) {
            return Err(format!(
                "Secondary loops not contained by first exterior loop - secondary loops must be holes: hole {}",
                i + 1
            ));
        }
    }
    Ok(Polygon::new(outer, holes))
}

/// A `$geoWithin` region.
#[derive(Clone, Debug)]
pub enum Region {
    /// A GeoJSON polygon or multipolygon (`$geometry`), on the sphere's coordinates.
    Sphere(Geometry<f64>),
    /// `$box` or `$polygon`: a flat polygon.
    Flat(Geometry<f64>),
    /// `$center`: a flat circle.
    Center(Coord<f64>, f64),
    /// `$centerSphere`: a spherical cap, radius in radians.
    CenterSphere(Coord<f64>, f64),
}

/// A `$near` or `$nearSphere` query.
#[derive(Clone, Debug)]
pub struct Near {
    /// The operator (`$near`, `$nearSphere`), for messages.
    pub op: &'static str,
    /// The query point.
    pub point: Coord<f64>,
    /// Distances on the sphere (a GeoJSON point, or `$nearSphere`) rather than flat.
    pub spherical: bool,
    /// Distances in meters (a GeoJSON point) rather than radians or flat units.
    pub meters: bool,
    /// `$minDistance`.
    pub min: Option<f64>,
    /// `$maxDistance`.
    pub max: Option<f64>,
}

/// A geospatial predicate.
#[derive(Clone, Debug)]
pub enum GeoPred {
    /// `$geoWithin` (also `$within`).
    Within(Region),
    /// `$geoIntersects` with a GeoJSON geometry.
    Intersects(Geometry<f64>),
    /// `$near` / `$nearSphere`.
    Near(Near),
}

/// A parsed geo predicate with the operand as written (for explain).
#[derive(Clone, Debug)]
pub struct GeoQuery {
    /// The predicate.
    pub pred: GeoPred,
    /// The operator document as written, e.g. `{$geoWithin: {$box: …}}`.
    pub source: Document,
}

fn bad(msg: impl Into<String>) -> crate::error::Error {
    err!(BadValue, "{}", msg.into())
}

/// Parses `$geoWithin`/`$within`.
pub fn parse_within(op: &str, v: &Bson) -> Result<GeoQuery> {
    let Bson::Document(d) = v else {
        bail!(BadValue, "{op} operator must be an object");
    };
    let Some((shape, arg)) = d.iter().find(|(k, _)| k.as_str() != "$uniqueDocs") else {
        bail!(BadValue, "{op} must have a shape");
    };
    let region = match shape.as_str() {
        "$geometry" => {
            let Bson::Document(g) = arg else { bail!(BadValue, "$geometry must be an object") };
            let geom = parse_geojson(g).map_err(bad)?;
            if !matches!(geom, Geometry::Polygon(_) | Geometry::MultiPolygon(_)) {
                bail!(
                    BadValue,
                    "$geoWithin not supported with provided geometry: {}",
                    crate::doc::fmt::value_string(arg)
                );
            }
            Region::Sphere(geom)
        }
        "$box" => {
            let pts = legacy_points(arg, "$box")?;
            if pts.len() != 2 {
                bail!(BadValue, "Point must only contain numeric elements");
            }
            let (a, b) = (pts[0], pts[1]);
            let rect = geo::Rect::new(a, b);
            Region::Flat(Geometry::Polygon(rect.to_polygon()))
        }
        "$polygon" => {
            let mut pts = legacy_points(arg, "$polygon")?;
            if pts.len() < 3 {
                bail!(BadValue, "Polygon must have at least 3 points");
            }
            pts.push(pts[0]);
            Region::Flat(Geometry::Polygon(Polygon::new(LineString(pts), Vec::new())))
        }
        "$center" | "$centerSphere" => {
            let Bson::Array(items) = arg else { bail!(BadValue, "{shape} must be an array") };
            let center = items.first().and_then(legacy_pair);
            let radius = items.get(1).and_then(number);
            let (Some(c), Some(r), 2) = (center, radius, items.len()) else {
                bail!(BadValue, "Point must only contain numeric elements");
            };
            if r < 0.0 || r.is_nan() {
                bail!(BadValue, "radius must be a non-negative number");
            }
            if shape == "$center" {
                Region::Center(c, r)
            } else {
                check_lng_lat(c.x, c.y).map_err(bad)?;
                Region::CenterSphere(c, r)
            }
        }
        other => bail!(
            BadValue,
            "unknown geo specifier: {other}: {}",
            crate::doc::fmt::value_string(arg)
        ),
    };
    let mut source = Document::new();
    source.insert(op, v.clone());
    Ok(GeoQuery { pred: GeoPred::Within(region), source })
}

fn legacy_points(v: &Bson, op: &str) -> Result<Vec<Coord<f64>>> {
    let Bson::Array(items) = v else { bail!(BadValue, "{op} must be an array") };
    items
        .iter()
        .map(|p| legacy_pair(p).ok_or_else(|| bad("Point must only contain numeric elements")))
        .collect()
}

/// Parses `$geoIntersects`.
pub fn parse_intersects(v: &Bson) -> Result<GeoQuery> {
    let Bson::Document(d) = v else { bail!(BadValue, "$geoIntersects operator must be an object") };
    let Some(Bson::Document(g)) = d.get("$geometry") else {
        bail!(
            BadValue,
            "$geoIntersects not supported with provided geometry: {}",
            crate::doc::fmt::value_string(v)
        );
    };
    let geom = parse_geojson(g).map_err(bad)?;
    let mut source = Document::new();
    source.insert("$geoIntersects", v.clone());
    Ok(GeoQuery { pred: GeoPred::Intersects(geom), source })
}

/// Parses `$near`/`$nearSphere` with the `$minDistance`/`$maxDistance` given beside it (legacy
/// form) or inside it (GeoJSON form).
pub fn parse_near(op: &str, v: &Bson, siblings: &Document) -> Result<GeoQuery> {
    let op_name: &'static str = if op == "$near" { "$near" } else { "$nearSphere" };
    let mut min = dist_arg(siblings.get("$minDistance"), "$minDistance")?;
    let mut max = dist_arg(siblings.get("$maxDistance"), "$maxDistance")?;
    let (point, meters) = match v {
        Bson::Document(d) if d.contains_key("$geometry") => {
            let Some(Bson::Document(g)) = d.get("$geometry") else {
                bail!(BadValue, "$geometry must be an object");
            };
            let geom = parse_geojson(g).map_err(bad)?;
            let Geometry::Point(p) = geom else {
                bail!(
                    BadValue,
                    "invalid point in geo near query $geometry argument: {}",
                    crate::doc::fmt::value_string(&Bson::Document(g.clone()))
                );
            };
            if let Some(m) = d.get("$minDistance") {
                min = dist_arg(Some(m), "$minDistance")?;
            }
            if let Some(m) = d.get("$maxDistance") {
                max = dist_arg(Some(m), "$maxDistance")?;
            }
            (p.0, true)
        }
        other => match legacy_pair(other) {
            Some(c) => (c, false),
            None => bail!(
                BadValue,
                "invalid point in geo near query $geometry argument: {}",
                crate::doc::fmt::value_string(other)
            ),
        },
    };
    let spherical = meters || op_name == "$nearSphere";
    if spherical {
        check_lng_lat(point.x, point.y).map_err(bad)?;
    }
    let mut source = Document::new();
    source.insert(op_name, v.clone());
    for k in ["$minDistance", "$maxDistance"] {
        if let Some(x) = siblings.get(k) {
            source.insert(k, x.clone());
        }
    }
    Ok(GeoQuery {
        pred: GeoPred::Near(Near { op: op_name, point, spherical, meters, min, max }),
        source,
    })
}

fn dist_arg(v: Option<&Bson>, name: &str) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(v) => match number(v) {
            Some(n) if n >= 0.0 && !n.is_nan() => Ok(Some(n)),
            Some(_) => bail!(BadValue, "{name} must be non-negative"),
            None => bail!(BadValue, "{name} must be a number"),
        },
    }
}

/// The great-circle angle in radians between two (lng, lat) points, as S2 computes it.
pub fn sphere_angle(a: Coord<f64>, b: Coord<f64>) -> f64 {
    let pa = s2::point::Point::from(&LatLng::from_degrees(a.y, a.x));
    let pb = s2::point::Point::from(&LatLng::from_degrees(b.y, b.x));
    pa.distance(&pb).rad()
}

fn flat_distance(a: Coord<f64>, b: Coord<f64>) -> f64 {
    (a.x - b.x).hypot(a.y - b.y)
}

fn vertices(g: &Geometry<f64>) -> Vec<Coord<f64>> {
    use geo::CoordsIter;
    g.coords_iter().collect()
}

impl Near {
    /// The distance from the query point to a stored shape in this query's unit.
    pub fn distance_to(&self, shape: &Shape) -> f64 {
        let point = Point(self.point);
        if !matches!(shape.geom, Geometry::Point(_)) && shape.geom.intersects(&point) {
            return 0.0;
        }
        let d = vertices(&shape.geom)
            .into_iter()
            .map(|c| {
                if self.spherical {
                    sphere_angle(self.point, c)
                } else {
                    flat_distance(self.point, c)
                }
            })
            .fold(f64::INFINITY, f64::min);
        if self.meters { d * EARTH_RADIUS_METERS } else { d }
    }

    /// The smallest distance to any location of a stored value, if it has one.
    pub fn distance_to_value(&self, v: &Bson) -> Option<f64> {
        let shapes = shapes_of(v).ok()?;
        shapes.iter().map(|s| self.distance_to(s)).reduce(f64::min)
    }

    fn in_range(&self, d: f64) -> bool {
        self.min.is_none_or(|m| d >= m) && self.max.is_none_or(|m| d <= m)
    }

    /// The largest distance as an angle in radians (for a spherical covering), if bounded.
    pub fn max_radians(&self) -> Option<f64> {
        let m = self.max?;
        Some(if self.meters { m / EARTH_RADIUS_METERS } else { m })
    }
}

impl GeoPred {
    /// Whether a stored value satisfies the predicate. For an array of locations, some location
    /// must satisfy it, as in MongoDB.
    pub fn matches(&self, v: &Bson) -> bool {
        let Ok(shapes) = shapes_of(v) else { return false };
        match self {
            GeoPred::Near(n) => shapes.iter().any(|s| n.in_range(n.distance_to(s))),
            GeoPred::Intersects(g) => {
                shapes.iter().any(|s| !s.legacy_out_of_range() && g.relate(&s.geom).is_intersects())
            }
            GeoPred::Within(region) => shapes.iter().any(|s| region.covers(s)),
        }
    }
}

impl Shape {
    fn legacy_out_of_range(&self) -> bool {
        self.legacy && vertices(&self.geom).iter().any(|c| check_lng_lat(c.x, c.y).is_err())
    }
}

impl Region {
    fn covers(&self, s: &Shape) -> bool {
        match self {
            Region::Sphere(g) => !s.legacy_out_of_range() && g.relate(&s.geom).is_covers(),
            Region::Flat(g) => g.relate(&s.geom).is_covers(),
            Region::Center(c, r) => vertices(&s.geom).iter().all(|v| flat_distance(*c, *v) <= *r),
            Region::CenterSphere(c, r) => {
                !s.legacy_out_of_range()
                    && match &s.geom {
                        Geometry::Point(p) => sphere_angle(*c, p.0) <= *r,
                        // A cap is convex on the sphere: a geometry is inside when its vertices
                        // are and it does not wrap around the cap.
                        g => vertices(g).iter().all(|v| sphere_angle(*c, *v) <= *r),
                    }
            }
        }
    }

    /// Whether a flat point lies in the region (for polygons: on or inside the boundary).
    pub fn contains_point(&self, c: Coord<f64>) -> bool {
        self.covers(&Shape { geom: Geometry::Point(Point(c)), legacy: true })
    }
}

// ---------------------------------------------------------------------------------------------
// Coverings.

/// The bounding (lng, lat) rectangle of some coordinates: `(min, max)`.
fn bounds(coords: &[Coord<f64>]) -> Option<(Coord<f64>, Coord<f64>)> {
    let first = *coords.first()?;
    Some(coords.iter().fold((first, first), |(lo, hi), c| {
        (Coord { x: lo.x.min(c.x), y: lo.y.min(c.y) }, Coord { x: hi.x.max(c.x), y: hi.y.max(c.y) })
    }))
}

fn coverer(max_cells: usize) -> RegionCoverer {
    RegionCoverer { min_level: 0, max_level: FINEST_LEVEL, level_mod: 1, max_cells }
}

fn rect_cells(lo: Coord<f64>, hi: Coord<f64>, max_cells: usize) -> Vec<CellID> {
    let rect = s2::rect::Rect::from_degrees(
        lo.y.max(-90.0),
        lo.x.max(-180.0),
        hi.y.min(90.0),
        hi.x.min(180.0),
    );
    coverer(max_cells).covering(&rect).0
}

fn cap_cells(c: Coord<f64>, radians: f64, max_cells: usize) -> Vec<CellID> {
    let center = s2::point::Point::from(&LatLng::from_degrees(c.y, c.x));
    let angle: Angle = Rad(radians.min(std::f64::consts::PI)).into();
    let cap = s2::cap::Cap::from_center_angle(&center, &angle);
    coverer(max_cells).covering(&cap).0
}

/// The S2 cell ids a stored shape is indexed by in a 2dsphere index.
pub fn sphere_keys(s: &Shape) -> std::result::Result<Vec<i64>, String> {
    let vs = vertices(&s.geom);
    for v in &vs {
        check_lng_lat(v.x, v.y)?;
    }
    let cells = match &s.geom {
        Geometry::Point(p) => {
            vec![CellID::from(&LatLng::from_degrees(p.0.y, p.0.x)).parent(u64::from(FINEST_LEVEL))]
        }
        g => {
            let Some((lo, hi)) = bounds(&vertices(g)) else { return Ok(Vec::new()) };
            rect_cells(lo, hi, MAX_INDEX_CELLS)
        }
    };
    Ok(cells.into_iter().map(|c| c.0 as i64).collect())
}

/// Inclusive ranges of stored 2dsphere keys that may satisfy a predicate, or `None` when the
/// predicate cannot be answered through a 2dsphere index (flat `$box`, `$polygon`, `$center`,
/// flat `$near`).
pub fn sphere_ranges(p: &GeoPred) -> Option<Vec<(i64, i64)>> {
    let cells = match p {
        GeoPred::Within(Region::Sphere(g)) | GeoPred::Intersects(g) => {
            let (lo, hi) = bounds(&vertices(g))?;
            rect_cells(lo, hi, MAX_QUERY_CELLS)
        }
        GeoPred::Within(Region::CenterSphere(c, r)) => cap_cells(*c, *r, MAX_QUERY_CELLS),
        GeoPred::Near(n) if n.spherical => match n.max_radians() {
            Some(r) => cap_cells(n.point, r, MAX_QUERY_CELLS),
            None => (0..6).map(CellID::from_face).collect(),
        },
        _ => return None,
    };
    Some(cell_ranges(&cells))
}

/// The key ranges that find every stored cell intersecting one of `cells`: each cell's range of
/// descendants, and each of its ancestors as a point.
fn cell_ranges(cells: &[CellID]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for c in cells {
        out.push((c.range_min().0 as i64, c.range_max().0 as i64));
        for level in 0..c.level() {
            let a = c.parent(level).0 as i64;
            out.push((a, a));
        }
    }
    merge(out)
}

fn merge(mut ranges: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The grid of a 2d index: `bits` per coordinate over `[min, max)` in both dimensions
/// (MongoDB's defaults: 26 bits over [-180, 180)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlatGrid {
    /// Bits per coordinate, 1 to 32.
    pub bits: u32,
    /// The inclusive lower bound of both coordinates.
    pub min: f64,
    /// The exclusive upper bound of both coordinates.
    pub max: f64,
}

impl Default for FlatGrid {
    fn default() -> FlatGrid {
        FlatGrid { bits: FLAT_BITS, min: -180.0, max: 180.0 }
    }
}

impl FlatGrid {
    /// The grid of a 2d index from its options (`bits`, `min`, `max`, validated when the index
    /// was created); the defaults for those absent.
    pub fn of_index(options: &Document) -> FlatGrid {
        let num = |k: &str| options.get(k).and_then(crate::doc::compare::as_f64);
        let d = FlatGrid::default();
        FlatGrid {
            bits: num("bits").map_or(d.bits, |b| (b as i64).clamp(1, 32) as u32),
            min: num("min").unwrap_or(d.min),
            max: num("max").unwrap_or(d.max),
        }
    }

    /// The cell of a coordinate along one dimension (clamped to the grid).
    fn scale(&self, v: f64) -> u64 {
        let cells = (1u64 << self.bits) as f64;
        (((v - self.min) / (self.max - self.min) * cells) as u64).min((1u64 << self.bits) - 1)
    }

    /// A coordinate clamped to the grid's bounds.
    fn clamp(&self, v: f64) -> f64 {
        v.clamp(self.min, self.max)
    }
}

/// The 2d index key of a flat point: the Morton interleaving of its coordinates scaled to the
/// grid's bits over its `[min, max)`. Points outside fail as MongoDB's 13027 does.
pub fn flat_key(c: Coord<f64>, grid: &FlatGrid) -> std::result::Result<i64, String> {
    let inside = |v: f64| v >= grid.min && v < grid.max;
    if !inside(c.x) || !inside(c.y) {
        return Err(format!(
            "point not in interval of [ {}, {} ) :: caused by :: {{ 0: {}, 1: {} }}",
            crate::doc::fmt::cpp_double(grid.min),
            crate::doc::fmt::cpp_double(grid.max),
            fmt_num(c.x),
            fmt_num(c.y)
        ));
    }
    Ok(interleave(grid.scale(c.x), grid.scale(c.y), grid.bits) as i64)
}

fn interleave(x: u64, y: u64, bits: u32) -> u64 {
    let mut out = 0u64;
    for bit in 0..bits {
        out |= ((x >> bit) & 1) << (2 * bit + 1);
        out |= ((y >> bit) & 1) << (2 * bit);
    }
    out
}

/// The flat bounding box of a predicate's region for a 2d index, if it has one.
fn flat_box(p: &GeoPred) -> Option<(Coord<f64>, Coord<f64>)> {
    match p {
        GeoPred::Within(Region::Flat(g) | Region::Sphere(g)) | GeoPred::Intersects(g) => {
            bounds(&vertices(g))
        }
        GeoPred::Within(Region::Center(c, r)) => {
            Some((Coord { x: c.x - r, y: c.y - r }, Coord { x: c.x + r, y: c.y + r }))
        }
        GeoPred::Within(Region::CenterSphere(c, r)) => Some(sphere_box(*c, *r)),
        GeoPred::Near(n) => {
            let r = n.max?;
            if n.spherical {
                Some(sphere_box(n.point, n.max_radians().unwrap_or(r)))
            } else {
                Some((
                    Coord { x: n.point.x - r, y: n.point.y - r },
                    Coord { x: n.point.x + r, y: n.point.y + r },
                ))
            }
        }
    }
}

/// A (lng, lat) box around a spherical cap (the whole longitude range near a pole).
fn sphere_box(c: Coord<f64>, radians: f64) -> (Coord<f64>, Coord<f64>) {
    let r = radians.to_degrees();
    let (lat_lo, lat_hi) = (c.y - r, c.y + r);
    if lat_lo <= -90.0 || lat_hi >= 90.0 {
        return (
            Coord { x: -180.0, y: lat_lo.max(-90.0) },
            Coord { x: 180.0, y: lat_hi.min(90.0) },
        );
    }
    let cos = lat_lo.to_radians().cos().min(lat_hi.to_radians().cos());
    let dx = if cos > 1e-9 { (r / cos).min(180.0) } else { 180.0 };
    (Coord { x: c.x - dx, y: lat_lo }, Coord { x: c.x + dx, y: lat_hi })
}

/// Inclusive ranges of 2d keys whose points may lie in the predicate's region (a quadtree
/// decomposition of its bounding box into at most about [`MAX_QUERY_CELLS`] cells); `None` for a
/// `$near` without `$maxDistance` (the whole index is scanned).
pub fn flat_ranges(p: &GeoPred, grid: &FlatGrid) -> Option<Vec<(i64, i64)>> {
    let (lo, hi) = flat_box(p)?;
    let (x0, y0) = (grid.scale(grid.clamp(lo.x)), grid.scale(grid.clamp(lo.y)));
    let (x1, y1) = (grid.scale(grid.clamp(hi.x)), grid.scale(grid.clamp(hi.y)));
    // Choose the coarsest level at which the box spans at most a few cells per side.
    let bits = grid.bits;
    let span = (x1 - x0).max(y1 - y0) + 1;
    let mut level = bits;
    while level > 0 && (span >> (bits - level)) > 2 {
        level -= 1;
    }
    let shift = bits - level;
    let mut out = Vec::new();
    for cx in (x0 >> shift)..=(x1 >> shift) {
        for cy in (y0 >> shift)..=(y1 >> shift) {
            let base = interleave(cx << shift, cy << shift, bits);
            let size = 1u64 << (2 * shift);
            out.push((base as i64, (base + size - 1) as i64));
        }
    }
    Some(merge(out))
}
