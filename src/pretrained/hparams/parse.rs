//! YAML text -> a tree that keeps tags and scalar styles (saphyr-parser events), which
//! HyperPyYAML needs and serde-style YAML loaders drop.

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle};

use super::HparamsError;

/// A YAML node before HyperPyYAML resolution.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    Scalar {
        value: String,
        plain: bool,
        tag: Option<String>,
        line: usize,
    },
    Seq {
        items: Vec<Raw>,
        tag: Option<String>,
        line: usize,
    },
    Map {
        items: IndexMap<String, Raw>,
        tag: Option<String>,
        line: usize,
    },
}

impl Raw {
    pub(crate) fn tag(&self) -> Option<&str> {
        match self {
            Raw::Scalar { tag, .. } | Raw::Seq { tag, .. } | Raw::Map { tag, .. } => tag.as_deref(),
        }
    }

    pub(crate) fn line(&self) -> usize {
        match self {
            Raw::Scalar { line, .. } | Raw::Seq { line, .. } | Raw::Map { line, .. } => *line,
        }
    }
}

fn tag_string(tag: &saphyr_parser::Tag) -> String {
    if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
        format!("!!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

/// Parses one YAML document into a [`Raw`] tree. Anchors and aliases are expanded.
pub(crate) fn parse_yaml(text: &str, origin: &str) -> Result<Raw, HparamsError> {
    let mut parser = Parser::new_from_str(text);
    let mut anchors: Vec<Option<Raw>> = Vec::new();
    // Stack of containers under construction: (node, pending map key, anchor id).
    enum Frame {
        Seq(Vec<Raw>, Option<String>, usize, usize),
        Map(
            IndexMap<String, Raw>,
            Option<String>,
            Option<String>,
            usize,
            usize,
        ),
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Raw> = None;
    let syntax = |msg: String| HparamsError::Syntax {
        origin: origin.to_string(),
        message: msg,
    };

    let push_value =
        |stack: &mut Vec<Frame>, root: &mut Option<Raw>, node: Raw| -> Result<(), HparamsError> {
            match stack.last_mut() {
                None => {
                    *root = Some(node);
                    Ok(())
                }
                Some(Frame::Seq(items, ..)) => {
                    items.push(node);
                    Ok(())
                }
                Some(Frame::Map(items, _, pending, ..)) => match pending.take() {
                    None => match node {
                        Raw::Scalar { value, .. } => {
                            *pending = Some(value);
                            Ok(())
                        }
                        other => Err(HparamsError::Syntax {
                            origin: origin.to_string(),
                            message: format!("line {}: mapping keys must be scalars", other.line()),
                        }),
                    },
                    Some(key) => {
                        items.insert(key, node);
                        Ok(())
                    }
                },
            }
        };

    let set_anchor = |anchors: &mut Vec<Option<Raw>>, id: usize, node: &Raw| {
        if id > 0 {
            if anchors.len() <= id {
                anchors.resize(id + 1, None);
            }
            anchors[id] = Some(node.clone());
        }
    };

    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(syntax(e.to_string())),
        };
        let line = span.start.line();
        match event {
            Event::StreamStart | Event::DocumentStart(_) | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentEnd => {
                if root.is_some() {
                    break;
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = Raw::Scalar {
                    value: value.into_owned(),
                    plain: matches!(style, ScalarStyle::Plain),
                    tag: tag.as_deref().map(tag_string),
                    line,
                };
                set_anchor(&mut anchors, anchor, &node);
                push_value(&mut stack, &mut root, node)?;
            }
            Event::Alias(id) => {
                let node = anchors
                    .get(id)
                    .and_then(|n| n.clone())
                    .ok_or_else(|| syntax(format!("line {line}: unknown alias")))?;
                push_value(&mut stack, &mut root, node)?;
            }
            Event::SequenceStart(anchor, tag) => {
                stack.push(Frame::Seq(
                    Vec::new(),
                    tag.as_deref().map(tag_string),
                    anchor,
                    line,
                ));
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq(items, tag, anchor, l)) = stack.pop() else {
                    return Err(syntax(format!("line {line}: unbalanced sequence")));
                };
                let node = Raw::Seq {
                    items,
                    tag,
                    line: l,
                };
                set_anchor(&mut anchors, anchor, &node);
                push_value(&mut stack, &mut root, node)?;
            }
            Event::MappingStart(anchor, tag) => {
                stack.push(Frame::Map(
                    IndexMap::new(),
                    tag.as_deref().map(tag_string),
                    None,
                    anchor,
                    line,
                ));
            }
            Event::MappingEnd => {
                let Some(Frame::Map(items, tag, _, anchor, l)) = stack.pop() else {
                    return Err(syntax(format!("line {line}: unbalanced mapping")));
                };
                let node = Raw::Map {
                    items,
                    tag,
                    line: l,
                };
                set_anchor(&mut anchors, anchor, &node);
                push_value(&mut stack, &mut root, node)?;
            }
        }
    }
    Ok(root.unwrap_or(Raw::Map {
        items: IndexMap::new(),
        tag: None,
        line: 1,
    }))
}
