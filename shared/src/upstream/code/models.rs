//! The models MiniMax Code serves and the rules each one keeps (protocol
//! sections 4.4, 4.9 and 5): the static catalogue the protocol records,
//! which `MINIMAX_CODE_MODELS` replaces.

/// How a model thinks (section 4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thinks {
    /// Always; `{"type":"disabled"}` is a 400 (M3.1).
    Forced,
    /// Only when asked with `adaptive`; `disabled` turns it off (M3).
    Switchable,
    /// Always; `disabled` is ignored (M2.7).
    Always,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Model {
    pub id: String,
    pub context: u32,
    pub output: u32,
    pub images: bool,
    pub thinks: Thinks,
}

impl Model {
    /// What the protocol says of a catalogue id: by its family, since the
    /// ids carry it (`MiniMax-M3.1…`, `MiniMax-M3`, `MiniMax-M2.7…`).
    pub fn known(id: &str) -> Self {
        let lower = id.to_ascii_lowercase();
        let (context, images, thinks) = if lower.starts_with("minimax-m3.1") {
            (512_000, true, Thinks::Forced)
        } else if lower.starts_with("minimax-m3") {
            (512_000, true, Thinks::Switchable)
        } else {
            (200_000, false, Thinks::Always)
        };
        Self {
            id: id.to_string(),
            context,
            output: 128_000,
            images,
            thinks,
        }
    }
}

/// The catalogue of section 5, in its order.
pub const STATIC_MODELS: [&str; 4] = [
    "MiniMax-M3.1-Flash-Preview",
    "MiniMax-M3",
    "MiniMax-M2.7-highspeed",
    "MiniMax-M2.7",
];

/// The models this deployment offers, and which one a name asks for.
#[derive(Clone, Debug)]
pub struct Catalogue {
    models: Vec<Model>,
    default: Model,
}

impl Catalogue {
    /// `ids` (empty: the static list) and the model for other names.
    pub fn new(ids: &[String], default: &str) -> Self {
        let models: Vec<Model> = if ids.is_empty() {
            STATIC_MODELS.iter().map(|id| Model::known(id)).collect()
        } else {
            ids.iter().map(|id| Model::known(id)).collect()
        };
        let default = models
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(default))
            .cloned()
            .unwrap_or_else(|| Model::known(default));
        Self { models, default }
    }

    /// The model a caller's name asks for: a catalogue id in any case, or
    /// the default for every other name (`gpt-4o`, `claude-…`, `hailuo`).
    pub fn resolve(&self, name: &str) -> &Model {
        self.models
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(name.trim()))
            .unwrap_or(&self.default)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_catalogue_ids_or_the_default() {
        let c = Catalogue::new(&[], "MiniMax-M3");
        assert_eq!(
            c.resolve("minimax-m3.1-flash-preview").id,
            "MiniMax-M3.1-Flash-Preview"
        );
        assert_eq!(c.resolve("gpt-4o").id, "MiniMax-M3");
        assert_eq!(c.resolve("MiniMax-M2.7").thinks, Thinks::Always);
        assert!(!c.resolve("MiniMax-M2.7-highspeed").images);
        assert_eq!(
            c.resolve("MiniMax-M3.1-Flash-Preview").thinks,
            Thinks::Forced
        );
        assert_eq!(c.ids().count(), 4);
        let c = Catalogue::new(&["MiniMax-M2.5".into()], "MiniMax-M2.5");
        assert_eq!(c.ids().collect::<Vec<_>>(), ["MiniMax-M2.5"]);
        assert_eq!(c.resolve("x").context, 200_000);
    }
}
