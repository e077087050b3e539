//! The `$geoNear` stage: documents ordered by distance from a point, each with its distance
//! (and optionally the location it was measured to).
//!
//! `$geoNear` must be the first stage of a pipeline on a collection with a geo index. Which
//! location field it measures is the `key` option or, as in MongoDB, the field of the collection's
//! only 2d index, else of its only 2dsphere index; the [`super::Source`] resolves it from the
//! catalog (IndexNotFound 27 when there is none, or more than one to choose from). Units follow
//! MongoDB: a GeoJSON `near` measures meters on the sphere; a legacy pair measures radians with
//! `spherical: true` or against a 2dsphere index, flat units otherwise. `distanceMultiplier`
//! scales the reported distance only, not `minDistance`/`maxDistance`.
//!
//! The command layer hands the stage the documents that match its `query` (through an index when
//! one serves it); the stage measures, filters by distance, sorts nearest first (ties keep their
//! input order) and annotates.

use bson::{Bson, Document};

use super::Context;
use crate::error::Result;
use crate::expr::loc;
use crate::query::Filter;
use crate::query::geo::{self, Near};
use crate::{bail, err};

/// A parsed `$geoNear` stage.
#[derive(Clone, Debug)]
pub struct GeoNear {
    /// The `near` point, in (lng, lat) or flat coordinates.
    point: geo::Coord<f64>,
    /// Whether `near` was a GeoJSON point (distances in meters).
    geojson: bool,
    /// `spherical`.
    spherical: bool,
    /// `distanceField` (a dotted path).
    distance_field: String,
    /// `includeLocs` (a dotted path).
    include_locs: Option<String>,
    /// `distanceMultiplier`.
    multiplier: f64,
    /// `minDistance` and `maxDistance`.
    min: Option<f64>,
    max: Option<f64>,
    /// `query`, and the filter parsed from it.
    query: Option<Filter>,
    /// `key`.
    key: Option<String>,
    /// Whether a later stage reads `{$meta: "geoNearDistance"}` or `{$meta: "geoNearPoint"}`:
    /// the stage then leaves them in their carrier fields (removed when the pipeline ends).
    annotate: bool,
}

impl GeoNear {
    /// The stage with its `query` comparing strings under the aggregate's collation.
    pub(super) fn with_collation(mut self, c: &crate::collation::CollationRef) -> GeoNear {
        self.query = self.query.map(|q| q.with_collation(Some(c)));
        self
    }

    /// Parses the stage's options with MongoDB's checks.
    pub fn parse(arg: &Bson) -> Result<GeoNear> {
        let Bson::Document(d) = arg else {
            bail!(FailedToParse, "$geoNear argument must be an object");
        };
        let mut out = GeoNear {
            point: geo::Coord { x: 0.0, y: 0.0 },
            geojson: false,
            spherical: false,
            distance_field: String::new(),
            include_locs: None,
            multiplier: 1.0,
            min: None,
            max: None,
            query: None,
            key: None,
            annotate: false,
        };
        // Options of the old `geoNear` command, refused by name before anything else is read.
        for (name, code, message) in [
            (
                "collation",
                40227,
                "$geoNear does not accept the 'collation' parameter. Instead, specify a \
                 collation for the entire aggregation command.",
            ),
            (
                "limit",
                50858,
                "$geoNear no longer supports the 'limit' parameter. Use a $limit stage instead.",
            ),
            (
                "num",
                50857,
                "$geoNear no longer supports the 'num' parameter. Use a $limit stage instead.",
            ),
            ("start", 50856, "$geoNear no longer supports the 'start' argument."),
        ] {
            if d.contains_key(name) {
                return Err(loc(code, message));
            }
        }
        let mut near = None;
        for (k, v) in d {
            match k.as_str() {
                "near" => near = Some(v.clone()),
                "distanceField" => match v {
                    Bson::String(s) if !s.is_empty() => out.distance_field = s.clone(),
                    _ => {
                        return Err(loc(
                            16606,
                            "$geoNear requires a 'distanceField' option as a String",
                        ));
                    }
                },
                "includeLocs" => match v {
                    Bson::String(s) => out.include_locs = Some(s.clone()),
                    _ => bail!(
                        TypeMismatch,
                        "$geoNear requires that 'includeLocs' option is a String"
                    ),
                },
                "spherical" => out.spherical = crate::doc::truthy(v),
                "distanceMultiplier" => match geo::number(v) {
                    Some(n) if n >= 0.0 => out.multiplier = n,
                    _ => bail!(BadValue, "distanceMultiplier must be a non-negative number"),
                },
                "minDistance" | "maxDistance" => match geo::number(v) {
                    Some(n) if n >= 0.0 => {
                        if k == "minDistance" {
                            out.min = Some(n);
                        } else {
                            out.max = Some(n);
                        }
                    }
                    Some(_) => bail!(BadValue, "{k} must be nonnegative"),
                    None => bail!(TypeMismatch, "{k} must be a number"),
                },
                "query" => match v {
                    Bson::Document(q) => out.query = Some(Filter::parse(q)?),
                    _ => bail!(TypeMismatch, "query must be an object"),
                },
                "key" => match v {
                    Bson::String(s) if !s.is_empty() => out.key = Some(s.clone()),
                    Bson::String(_) => {
                        bail!(BadValue, "$geoNear parameter 'key' cannot be the empty string")
                    }
                    _ => bail!(
                        TypeMismatch,
                        "$geoNear parameter 'key' must be of type string but found type: {}",
                        crate::doc::type_name(v)
                    ),
                },
                "uniqueDocs" => {}
                other => bail!(FailedToParse, "Unknown argument to $geoNear: {other}"),
            }
        }
        let Some(near) = near else {
            bail!(FailedToParse, "$geoNear requires a 'near' option as an Array");
        };
        match &near {
            Bson::Document(g) if g.contains_key("type") => {
                let geom = geo::parse_geojson(g).map_err(|m| err!(BadValue, "{m}"))?;
                let geo::GeoGeometry::Point(p) = geom else {
                    bail!(BadValue, "$geoNear requires near to be a GeoJSON point");
                };
                out.point = p.0;
                out.geojson = true;
            }
            other => match geo::legacy_pair(other) {
                Some(c) => out.point = c,
                None => bail!(BadValue, "$geoNear requires near to be an array or a GeoJSON point"),
            },
        }
        if out.distance_field.is_empty() {
            return Err(loc(16606, "$geoNear requires a 'distanceField' option as a String"));
        }
        if out.geojson || out.spherical {
            geo::check_lng_lat(out.point.x, out.point.y).map_err(|m| err!(BadValue, "{m}"))?;
        }
        Ok(out)
    }

    /// Makes the stage leave its metadata for `{$meta: "geoNearDistance"}` and
    /// `{$meta: "geoNearPoint"}` in later stages.
    pub fn annotate(&mut self) {
        self.annotate = true;
    }

    /// Measures, filters, sorts and annotates the input (see the module documentation).
    pub fn execute(&self, docs: Vec<Document>, ctx: &Context) -> Result<Vec<Document>> {
        let (key, sphere_index) =
            ctx.source.geo_near_key(&ctx.db, &ctx.collection, self.key.as_deref())?;
        let near = Near {
            op: "$geoNear",
            point: self.point,
            spherical: self.geojson || self.spherical || sphere_index,
            meters: self.geojson,
            min: self.min,
            max: self.max,
        };
        let mut measured: Vec<(f64, usize, Document, Bson)> = Vec::new();
        for (i, doc) in docs.into_iter().enumerate() {
            if self.query.as_ref().is_some_and(|q| !q.matches(&doc)) {
                continue;
            }
            let Some((d, location)) = nearest(&doc, &key, &near) else { continue };
            if near.min.is_some_and(|m| d < m) || near.max.is_some_and(|m| d > m) {
                continue;
            }
            measured.push((d, i, doc, location));
        }
        measured.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::with_capacity(measured.len());
        for (d, _, mut doc, location) in measured {
            let parts: Vec<&str> = self.distance_field.split('.').collect();
            super::stage::set_path(&mut doc, &parts, Some(Bson::Double(d * self.multiplier)));
            if let Some(path) = &self.include_locs {
                let parts: Vec<&str> = path.split('.').collect();
                super::stage::set_path(&mut doc, &parts, Some(location.clone()));
            }
            if self.annotate {
                // The metadata is the distance before `distanceMultiplier`, as in MongoDB.
                doc.insert(crate::expr::GEO_NEAR_DISTANCE_FIELD, d);
                doc.insert(crate::expr::GEO_NEAR_POINT_FIELD, location);
            }
            out.push(doc);
        }
        Ok(out)
    }
}

/// The distance of a document's nearest location at `key` from `near`, and that location (an
/// element of a list of locations, or the whole value).
pub(crate) fn nearest(doc: &Document, key: &str, near: &Near) -> Option<(f64, Bson)> {
    geo::values_at(doc, key)
        .into_iter()
        .flat_map(|v| match geo::shapes_of(&v) {
            // A list of locations reports the one it was measured to.
            Ok(shapes) if shapes.len() > 1 => v
                .as_array()
                .map(|items| items.to_vec())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|item| near.distance_to_value(&item).map(|d| (d, item)))
                .collect::<Vec<_>>(),
            Ok(_) => near.distance_to_value(&v).map(|d| (d, v)).into_iter().collect(),
            Err(_) => Vec::new(),
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
}
