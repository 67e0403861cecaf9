//! Strict template rendering with [`upon`], compiled once per source.
//!
//! A string in a spec is a template when it contains `{{` or `{%`. Every
//! other string is left as it is, at no cost. Rendering is strict: a
//! variable that is not defined is an error naming the variable, the
//! template, where it is in the spec and the node — never an empty string.
//!
//! A string that is exactly one variable reference (`"{{ PORT }}"`, with
//! nothing else around it) is replaced by the variable's *value*, keeping its
//! type: a number stays a number (so it can fill a `u16` field), a list stays
//! a list. Anything else renders to a string.
//!
//! Functions available in templates (use them as filters, `{{ x | lower }}`):
//!
//! * `lower`, `upper` — change the case of a string (topic and tag names
//!   often must be one case);
//! * `replace: "from", "to"` — replace every occurrence (a dotted location
//!   path as a topic: `{{ internal.location_path | replace: ".", "/" }}`);
//! * `json` — any value as compact JSON (to embed a list or a map in a
//!   configuration string).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use fsm_core::{NodePath, Value};
use upon::{ValueAccess, ValueAccessOp, ValueMember};

use crate::error::RenderError;

/// Whether `s` holds template syntax (`{{` or `{%`).
#[must_use]
pub fn has_template(s: &str) -> bool {
    fsm_core::is_template(s)
}

/// How well the compile cache is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Renders that found their template compiled already.
    pub hits: u64,
    /// Renders that had to compile it.
    pub misses: u64,
    /// Templates in the cache (at most [`Templates::CACHE_CAPACITY`]).
    pub templates: usize,
}

type Compiled = Arc<upon::Template<'static>>;

/// The compiled templates, in two generations of at most half the
/// capacity each: new ones go into `recent`; when it is full, it becomes
/// `older` (dropping the previous older one). A template used from `older`
/// moves back into `recent`, so the templates in use stay while ones that
/// were used once (a spec that kept changing) age out. Bounded, O(1), and
/// no bookkeeping on a hit in `recent`.
#[derive(Default)]
struct Cache {
    recent: HashMap<String, Compiled>,
    older: HashMap<String, Compiled>,
}

impl Cache {
    const GENERATION: usize = Templates::CACHE_CAPACITY / 2;

    fn insert(&mut self, source: String, template: Compiled) {
        self.older.remove(&source);
        if self.recent.len() >= Self::GENERATION {
            self.older = std::mem::take(&mut self.recent);
        }
        self.recent.insert(source, template);
    }

    fn len(&self) -> usize {
        self.recent.len() + self.older.len()
    }
}

/// The template engine of a tree: an upon engine with the functions above,
/// and a cache of compiled templates keyed by source, bounded at
/// [`CACHE_CAPACITY`](Self::CACHE_CAPACITY) templates (templates used
/// recently stay; others are compiled again when next needed). Shared by
/// all nodes (it is `Send + Sync`).
///
/// # Examples
///
/// ```
/// use fsm_core::{Map, NodePath, Value};
/// use fsm_templates::{Templates, VariableBundle};
///
/// let templates = Templates::new();
/// let vars = VariableBundle::default().with_user(Map::from([
///     ("IP", Value::from("10.0.0.5")),
///     ("PORT", Value::from(502)),
/// ]));
/// let spec = Value::map([
///     ("address", Value::from("{{ IP }}:{{ PORT }}")),
///     ("port", Value::from("{{ PORT }}")),
/// ]);
/// let node = NodePath::parse("plant/press");
/// let rendered = templates.render_value(&spec, &vars.flatten(), &node)?;
/// assert_eq!(rendered.get("address"), Some(&Value::from("10.0.0.5:502")));
/// assert_eq!(rendered.get("port"), Some(&Value::from(502))); // still a number
///
/// let err = templates
///     .render_value(&Value::from("{{ GATEWAY }}"), &vars.flatten(), &node)
///     .unwrap_err();
/// assert_eq!(err.variable.as_deref(), Some("GATEWAY"));
/// # Ok::<(), fsm_templates::RenderError>(())
/// ```
pub struct Templates {
    engine: upon::Engine<'static>,
    cache: RwLock<Cache>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("cache", &self.stats())
            .finish()
    }
}

impl Templates {
    /// The most compiled templates the cache holds: 4,096. A tree whose
    /// specs use more distinct templates than this still renders them all,
    /// compiling the ones that aged out again when they are next used.
    pub const CACHE_CAPACITY: usize = 4096;

    /// An engine with the documented functions and an empty cache.
    #[must_use]
    pub fn new() -> Self {
        let mut engine = upon::Engine::new();
        engine.add_function("lower", str::to_lowercase);
        engine.add_function("upper", str::to_uppercase);
        engine.add_function("replace", |s: &str, from: &str, to: &str| {
            s.replace(from, to)
        });
        engine.add_function("json", |v: &upon::Value| {
            serde_json::to_string(&from_upon(v)).unwrap_or_default()
        });
        Self {
            engine,
            cache: RwLock::new(Cache::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache's counters.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            templates: self
                .cache
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }

    fn compiled(&self, source: &str) -> Result<Compiled, upon::Error> {
        let older = {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(t) = cache.recent.get(source) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Arc::clone(t));
            }
            cache.older.get(source).map(Arc::clone)
        };
        let template = match older {
            Some(template) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                template
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Arc::new(self.engine.compile(source.to_owned())?)
            }
        };
        self.cache
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source.to_owned(), Arc::clone(&template));
        Ok(template)
    }

    /// Renders one template string against `ctx` (a flattened
    /// [`VariableBundle`](crate::VariableBundle)).
    ///
    /// # Errors
    ///
    /// A [`RenderError`] naming `node`, the template and, when that is the
    /// problem, the undefined variable.
    pub fn render_str(
        &self,
        source: &str,
        ctx: &Value,
        node: &NodePath,
    ) -> Result<String, RenderError> {
        self.render_at(source, ctx, node, "")
    }

    fn render_at(
        &self,
        source: &str,
        ctx: &Value,
        node: &NodePath,
        field: &str,
    ) -> Result<String, RenderError> {
        let error = |variable: Option<String>, message: String| RenderError {
            node: node.clone(),
            field: field.to_owned(),
            template: source.to_owned(),
            variable,
            message,
        };
        let template = self
            .compiled(source)
            .map_err(|e| error(None, e.to_string()))?;
        let missing: std::cell::RefCell<Option<String>> = std::cell::RefCell::default();
        let rendered = template
            .render_from_fn(&self.engine, |path: &[ValueMember<'_>]| {
                lookup(ctx, path).map_err(|undefined| {
                    let msg = format!("undefined variable `{undefined}`");
                    missing.borrow_mut().get_or_insert(undefined);
                    msg
                })
            })
            .to_string();
        rendered.map_err(|e| error(missing.take(), e.to_string()))
    }

    /// Renders every template string in `value` (a spec) against `ctx`,
    /// leaving everything else as it is.
    ///
    /// # Errors
    ///
    /// The first [`RenderError`], with the field where the template is.
    pub fn render_value(
        &self,
        value: &Value,
        ctx: &Value,
        node: &NodePath,
    ) -> Result<Value, RenderError> {
        if !value.has_templates() {
            return Ok(value.clone());
        }
        let mut field = String::new();
        self.render_walk(value, ctx, node, &mut field)
    }

    fn render_walk(
        &self,
        value: &Value,
        ctx: &Value,
        node: &NodePath,
        field: &mut String,
    ) -> Result<Value, RenderError> {
        match value {
            Value::String(s) if has_template(s) => {
                if let Some(var) = single_variable(s) {
                    return resolve(ctx, var).cloned().map_err(|undefined| RenderError {
                        node: node.clone(),
                        field: field.clone(),
                        template: s.clone(),
                        message: format!("undefined variable `{undefined}`"),
                        variable: Some(undefined),
                    });
                }
                self.render_at(s, ctx, node, field).map(Value::String)
            }
            Value::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = field.len();
                    push_field(field, &i.to_string());
                    out.push(self.render_walk(item, ctx, node, field)?);
                    field.truncate(len);
                }
                Ok(Value::List(out))
            }
            Value::Map(map) => {
                let mut out = fsm_core::Map::with_capacity(map.len());
                for (k, v) in map {
                    let len = field.len();
                    push_field(field, k);
                    out.insert(k.clone(), self.render_walk(v, ctx, node, field)?);
                    field.truncate(len);
                }
                Ok(Value::Map(out))
            }
            other => Ok(other.clone()),
        }
    }
}

/// Renders the templates of one node's spec as its typed spec reads them
/// (see [`fsm_core::Value::decode_with`]), keeping the first error whole.
///
/// # Examples
///
/// ```
/// use fsm_core::{Map, NodePath, Value};
/// use fsm_templates::{SpecRenderer, Templates, VariableBundle};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Conn { host: String, port: u16 }
///
/// let templates = Templates::new();
/// let vars = VariableBundle::default()
///     .with_user(Map::from([("SUBNET", Value::from("10.0.1")), ("PORT", Value::from(502))]))
///     .flatten();
/// let node = NodePath::parse("plant/line-1/press");
/// let spec = Value::map([("host", "{{ SUBNET }}.10".into()), ("port", "{{ PORT }}".into())]);
/// let renderer = SpecRenderer::new(&templates, &vars, &node);
/// let conn: Conn = spec.decode_with(&renderer).unwrap();
/// assert_eq!((conn.host.as_str(), conn.port), ("10.0.1.10", 502));
/// ```
pub struct SpecRenderer<'a> {
    templates: &'a Templates,
    ctx: &'a Value,
    node: &'a NodePath,
    first_error: Mutex<Option<RenderError>>,
}

impl<'a> SpecRenderer<'a> {
    /// A renderer of `node`'s templates against `ctx` (a flattened
    /// [`VariableBundle`](crate::VariableBundle)).
    #[must_use]
    pub fn new(templates: &'a Templates, ctx: &'a Value, node: &'a NodePath) -> Self {
        Self {
            templates,
            ctx,
            node,
            first_error: Mutex::new(None),
        }
    }

    /// The first template that failed, with the variable, field and node.
    #[must_use]
    pub fn take_error(&self) -> Option<RenderError> {
        self.first_error.lock().ok().and_then(|mut e| e.take())
    }
}

impl fsm_core::TemplateRenderer for SpecRenderer<'_> {
    fn render(&self, template: &str, field: &str) -> Result<Value, String> {
        let result = match single_variable(template) {
            Some(var) => resolve(self.ctx, var)
                .cloned()
                .map_err(|undefined| RenderError {
                    node: self.node.clone(),
                    field: field.to_owned(),
                    template: template.to_owned(),
                    message: format!("undefined variable `{undefined}`"),
                    variable: Some(undefined),
                }),
            None => self
                .templates
                .render_at(template, self.ctx, self.node, field)
                .map(Value::String),
        };
        result.map_err(|e| {
            let message = e.to_string();
            if let Ok(mut first) = self.first_error.lock() {
                first.get_or_insert(e);
            }
            message
        })
    }
}

fn push_field(field: &mut String, segment: &str) {
    if !field.is_empty() {
        field.push('.');
    }
    field.push_str(segment);
}

/// `"{{ a.b }}"` → `Some("a.b")`: a string that is exactly one plain
/// variable reference. Text around the braces, whitespace included, makes
/// it a template like any other (`" {{ a }}"` renders to a string with its
/// space).
fn single_variable(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let plain = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !inner.starts_with('.')
        && !inner.ends_with('.')
        && !inner.contains("..");
    plain.then_some(inner)
}

/// Resolves a dotted path in the context; `Err` carries the path up to the
/// first missing member.
fn resolve<'a>(ctx: &'a Value, dotted: &str) -> Result<&'a Value, String> {
    let mut current = ctx;
    let mut walked = String::new();
    for segment in dotted.split('.') {
        push_field(&mut walked, segment);
        current = match current {
            Value::Map(m) => m.get(segment),
            Value::List(l) => segment.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        }
        .ok_or_else(|| walked.clone())?;
    }
    Ok(current)
}

/// upon's lookup hook: strict for direct access, lenient for `?.`.
fn lookup(ctx: &Value, path: &[ValueMember<'_>]) -> Result<upon::Value, String> {
    let mut current = Some(ctx);
    let mut walked = String::new();
    for member in path {
        let segment = match member.access {
            ValueAccess::Key(k) => k.to_owned(),
            ValueAccess::Index(i) => i.to_string(),
        };
        push_field(&mut walked, &segment);
        let next = current.and_then(|c| match (c, member.access) {
            (Value::Map(m), ValueAccess::Key(k)) => m.get(k),
            (Value::List(l), ValueAccess::Index(i)) => l.get(i),
            _ => None,
        });
        match (next, member.op) {
            (Some(v), _) => current = Some(v),
            (None, ValueAccessOp::Optional) => return Ok(upon::Value::None),
            (None, ValueAccessOp::Direct) => return Err(walked),
        }
    }
    Ok(current.map_or(upon::Value::None, to_upon))
}

fn to_upon(v: &Value) -> upon::Value {
    match v {
        Value::Null => upon::Value::None,
        Value::Bool(b) => upon::Value::Bool(*b),
        Value::Int(i) => upon::Value::Integer(*i),
        Value::Float(f) => upon::Value::Float(*f),
        Value::String(s) => upon::Value::String(s.clone()),
        Value::List(l) => upon::Value::List(l.iter().map(to_upon).collect()),
        Value::Map(m) => {
            upon::Value::Map(m.iter().map(|(k, v)| (k.to_string(), to_upon(v))).collect())
        }
    }
}

fn from_upon(v: &upon::Value) -> Value {
    match v {
        upon::Value::None => Value::Null,
        upon::Value::Bool(b) => Value::Bool(*b),
        upon::Value::Integer(i) => Value::Int(*i),
        upon::Value::Float(f) => Value::Float(*f),
        upon::Value::String(s) => Value::String(s.clone()),
        upon::Value::List(l) => Value::List(l.iter().map(from_upon).collect()),
        upon::Value::Map(m) => {
            Value::Map(m.iter().map(|(k, v)| (k.clone(), from_upon(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{InternalVars, VariableBundle};
    use fsm_core::Map;

    fn ctx() -> Value {
        VariableBundle::default()
            .with_user(Map::from([
                ("IP".to_owned(), Value::from("10.0.0.5")),
                ("PORT".to_owned(), Value::from(502)),
                ("TAGS".to_owned(), Value::from(vec!["a", "b"])),
                ("Line".to_owned(), Value::from("Line-1")),
            ]))
            .with_global(Map::from([("api".to_owned(), Value::from("https://x"))]))
            .with_internal(InternalVars::new("1", NodePath::parse("p/c"), "conn", 0))
            .flatten()
    }

    fn node() -> NodePath {
        NodePath::parse("p/c")
    }

    #[test]
    fn whitespace_around_a_lone_variable_is_kept_as_text() {
        let t = Templates::new();
        let spec = Value::map([
            ("host", Value::from(" {{ IP }}")),
            ("port", Value::from("{{ PORT }} ")),
            ("typed", Value::from("{{ PORT }}")),
        ]);
        let rendered = t.render_value(&spec, &ctx(), &node()).unwrap();
        let Value::Map(m) = rendered else {
            panic!("{rendered:?}")
        };
        // In a spec as alone: the space is the template's text.
        assert_eq!(m["host"], Value::from(" 10.0.0.5"));
        assert_eq!(
            t.render_str(" {{ IP }}", &ctx(), &node()).unwrap(),
            " 10.0.0.5"
        );
        assert_eq!(m["port"], Value::from("502 "));
        // Exactly one variable, and nothing else: its value, typed.
        assert_eq!(m["typed"], Value::from(502));
    }

    #[test]
    fn the_compile_cache_stays_within_its_capacity_and_keeps_what_is_in_use() {
        let t = Templates::new();
        let hot = "{{ IP }}:{{ PORT }}";
        for i in 0..Templates::CACHE_CAPACITY + 500 {
            let source = format!("{{{{ IP }}}}-{i}");
            assert_eq!(
                t.render_str(&source, &ctx(), &node()).unwrap(),
                format!("10.0.0.5-{i}")
            );
            assert_eq!(t.render_str(hot, &ctx(), &node()).unwrap(), "10.0.0.5:502");
            assert!(t.stats().templates <= Templates::CACHE_CAPACITY);
        }
        let stats = t.stats();
        assert!(
            stats.templates >= Templates::CACHE_CAPACITY / 2,
            "{stats:?}"
        );
        // The template in use was compiled once, and every distinct one once.
        assert_eq!(stats.misses, Templates::CACHE_CAPACITY as u64 + 500 + 1);
        // One that aged out is compiled again, and renders the same.
        assert_eq!(
            t.render_str("{{ IP }}-0", &ctx(), &node()).unwrap(),
            "10.0.0.5-0"
        );
        assert_eq!(t.stats().misses, stats.misses + 1);
    }

    #[test]
    fn renders_all_three_namespaces() {
        let t = Templates::new();
        let s = t
            .render_str(
                "{{ IP }} {{ global.api }} {{ internal.path }} {{ internal.worker_type }}",
                &ctx(),
                &node(),
            )
            .unwrap();
        assert_eq!(s, "10.0.0.5 https://x p/c conn");
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it_the_template_and_the_node() {
        let t = Templates::new();
        let err = t
            .render_str("tcp://{{ IP }}:{{ GATEWAY_PORT }}", &ctx(), &node())
            .unwrap_err();
        assert_eq!(err.variable.as_deref(), Some("GATEWAY_PORT"));
        let msg = err.to_string();
        assert!(
            msg.contains("node `p/c`")
                && msg.contains("GATEWAY_PORT")
                && msg.contains("tcp://{{ IP }}"),
            "{msg}"
        );
        let err = t
            .render_str("{{ global.missing }}", &ctx(), &node())
            .unwrap_err();
        assert_eq!(err.variable.as_deref(), Some("global.missing"));
    }

    #[test]
    fn optional_access_is_lenient_and_syntax_errors_are_errors() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("[{{ global?.nope }}]", &ctx(), &node())
                .unwrap(),
            "[]"
        );
        let err = t.render_str("{{ IP ", &ctx(), &node()).unwrap_err();
        assert!(err.variable.is_none());
        assert!(err.to_string().contains("failed"), "{err}");
    }

    #[test]
    fn rendering_a_spec_renders_every_template_leaf_and_names_the_field() {
        let t = Templates::new();
        let spec = Value::map([
            (
                "conn",
                Value::map([
                    ("address", Value::from("{{ IP }}:{{ PORT }}")),
                    ("port", Value::from("{{ PORT }}")),
                ]),
            ),
            ("tags", Value::from("{{ TAGS }}")),
            ("topic", Value::from("umh/{{ Line | lower }}")),
            ("plain", Value::from("no template")),
            ("n", Value::from(3)),
        ]);
        let out = t.render_value(&spec, &ctx(), &node()).unwrap();
        assert_eq!(
            out.get("conn").and_then(|c| c.get("address")),
            Some(&Value::from("10.0.0.5:502"))
        );
        assert_eq!(
            out.get("conn").and_then(|c| c.get("port")),
            Some(&Value::from(502))
        );
        assert_eq!(out.get("tags"), Some(&Value::from(vec!["a", "b"])));
        assert_eq!(out.get("topic"), Some(&Value::from("umh/line-1")));
        assert_eq!(out.get("plain"), Some(&Value::from("no template")));

        let bad = Value::map([(
            "conn",
            Value::map([(
                "hosts",
                Value::List(vec![Value::from("ok"), Value::from("{{ NOPE }}")]),
            )]),
        )]);
        let err = t.render_value(&bad, &ctx(), &node()).unwrap_err();
        assert_eq!(err.field, "conn.hosts.1");
        assert_eq!(err.variable.as_deref(), Some("NOPE"));
    }

    #[test]
    fn templates_are_compiled_once_per_source() {
        let t = Templates::new();
        for _ in 0..5 {
            t.render_str("{{ IP }}-x", &ctx(), &node()).unwrap();
        }
        t.render_str("{{ IP }}-y", &ctx(), &node()).unwrap();
        let s = t.stats();
        assert_eq!((s.misses, s.hits, s.templates), (2, 4, 2));
    }

    #[test]
    fn the_json_function_embeds_structures() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("{{ TAGS | json }}", &ctx(), &node()).unwrap(),
            r#"["a","b"]"#
        );
        assert_eq!(
            t.render_str("{{ IP | upper }}", &ctx(), &node()).unwrap(),
            "10.0.0.5"
        );
        assert_eq!(
            t.render_str(r#"{{ IP | replace: ".", "/" }}"#, &ctx(), &node())
                .unwrap(),
            "10/0/0/5"
        );
    }

    #[test]
    fn values_without_templates_are_returned_untouched() {
        let t = Templates::new();
        let v = Value::map([("a", Value::from("{ not a template }"))]);
        assert_eq!(t.render_value(&v, &ctx(), &node()).unwrap(), v);
        assert_eq!(t.stats().misses, 0);
    }

    #[test]
    fn single_variable_detection_is_exact() {
        assert_eq!(single_variable("{{ A }}"), Some("A"));
        assert_eq!(single_variable("{{a.b.0}}"), Some("a.b.0"));
        assert_eq!(single_variable(" {{ A }}"), None);
        assert_eq!(single_variable("{{ A }}\n"), None);
        assert_eq!(single_variable("{{ A }}{{ B }}"), None);
        assert_eq!(single_variable("{{ A | lower }}"), None);
        assert_eq!(single_variable("x{{ A }}"), None);
    }
}
