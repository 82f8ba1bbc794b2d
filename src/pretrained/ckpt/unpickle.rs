//! A restricted unpickler for torch checkpoints: it understands the pickle opcodes a
//! `torch.save(state_dict)` file uses and builds plain values from them, and it refuses
//! everything else by name.
//!
//! Python's `pickle.load` calls whatever global a file names (`os.system`, `builtins.eval`);
//! torch's `weights_only=True` guards against that with an allow-list. This reader goes
//! further: it never calls anything. The few globals a state_dict needs are recognised as data
//! (`collections.OrderedDict` builds a dict, `torch._utils._rebuild_tensor_v2` describes a
//! tensor, `torch.FloatStorage` names a dtype) and any other global is an error naming it.
//! It also bounds what a small file can make it allocate (values, nesting, memo entries).

use std::collections::HashMap;

/// Most values (nodes of the object tree) one pickle may create; a state_dict of thousands
/// of tensors needs tens of thousands. Memo gets count their whole copy, so a "billion
/// laughs" pickle that refers to a list of lists of itself stops here, not in the allocator.
const MAX_NODES: usize = 20_000_000;
/// Deepest nesting of tuples, lists and dicts (state_dicts nest 2-4 levels).
const MAX_DEPTH: usize = 64;

/// A storage's element type, from torch's storage class name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
}

/// The globals a state_dict pickle may name; each is data here, never a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageType),
}

/// A storage as the pickle declares it: its file in the archive, dtype and element count.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: StorageType,
    pub numel: u64,
}

/// A tensor as the pickle describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// A value of the object tree a checkpoint pickle builds.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Value {
    fn nodes(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::nodes).sum::<usize>(),
            Value::Dict(v) => 1 + v.iter().map(|(k, v)| k.nodes() + v.nodes()).sum::<usize>(),
            _ => 1,
        }
    }
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(v) => {
                1 + v
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

enum Item {
    Mark,
    V(Value),
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
    nodes: usize,
}

/// Parses a torch checkpoint's `data.pkl` into plain values, refusing any opcode or global a
/// state_dict does not need. Errors say what was refused and at which byte.
pub fn unpickle(data: &[u8]) -> Result<Value, String> {
    let mut u = Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        nodes: 0,
    };
    u.run()
}

impl<'a> Unpickler<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("truncated pickle at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| format!("a GLOBAL name that is not UTF-8 at byte {}", self.pos))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn text(&mut self, n: usize) -> Result<String, String> {
        let at = self.pos;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("invalid UTF-8 string at byte {at}"))
    }

    /// Counts values created (pushed or copied into the memo) against [`MAX_NODES`].
    fn charge(&mut self, v: &Value) -> Result<(), String> {
        self.nodes += v.nodes();
        if self.nodes > MAX_NODES {
            return Err(format!(
                "the pickle builds more than {MAX_NODES} values (a pickle bomb?)"
            ));
        }
        Ok(())
    }
    fn push(&mut self, v: Value) -> Result<(), String> {
        self.charge(&v)?;
        if v.depth() > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Item::V(v));
        Ok(())
    }
    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Item::V(v)) => Ok(v),
            Some(Item::Mark) => Err(format!("unexpected MARK at byte {}", self.pos)),
            None => Err(format!("stack underflow at byte {}", self.pos)),
        }
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Item::V(v)) => Ok(v),
            _ => Err(format!("no value on the stack at byte {}", self.pos)),
        }
    }
    /// The values above the topmost MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.stack.iter().rposition(|i| matches!(i, Item::Mark));
        let m = m.ok_or_else(|| format!("no MARK on the stack at byte {}", self.pos))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|i| match i {
                Item::V(v) => v,
                Item::Mark => Value::None, // unreachable: m is the topmost mark
            })
            .collect())
    }
    /// Items going into a container already on the stack: the container's depth grows
    /// without a push, so it is checked here (deep nesting would overflow the stack on drop).
    fn check_depth(&self, items: &[Value]) -> Result<(), String> {
        if items.iter().any(|v| v.depth() >= MAX_DEPTH) {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }
    fn memo_put(&mut self, idx: u32) -> Result<(), String> {
        let v = self.top()?.clone();
        self.charge(&v)?;
        self.memo.insert(idx, v);
        Ok(())
    }
    fn memo_get(&mut self, idx: u32) -> Result<(), String> {
        let v = self.memo.get(&idx).cloned();
        let v = v.ok_or_else(|| format!("memo entry {idx} missing at byte {}", self.pos))?;
        self.push(v)
    }
    fn set_items(&mut self, pairs: Vec<Value>) -> Result<(), String> {
        if !pairs.len().is_multiple_of(2) {
            return Err(format!("odd number of dict items at byte {}", self.pos));
        }
        self.check_depth(&pairs)?;
        let mut it = pairs.into_iter();
        let mut kv = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            kv.push((k, v));
        }
        match self.top()? {
            Value::Dict(d) => {
                d.extend(kv);
                Ok(())
            }
            other => Err(format!("SETITEM on a {}", other.kind())),
        }
    }
    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        self.check_depth(&items)?;
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(format!("APPEND on a {}", other.kind())),
        }
    }

    fn global(&mut self) -> Result<Value, String> {
        let module = self.line()?;
        let name = self.line()?;
        let storage = (module == "torch")
            .then(|| StorageType::from_class(name))
            .flatten();
        let g = match (module, name, storage) {
            (_, _, Some(dtype)) => Global::Storage(dtype),
            ("collections", "OrderedDict", _) => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2", _) => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter", _) => Global::RebuildParameter,
            _ => {
                return Err(format!(
                    "refused global `{module}.{name}`: a checkpoint may only name \
                     collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
                     torch._utils._rebuild_parameter and torch's storage classes"
                ))
            }
        };
        Ok(Value::Global(g))
    }

    /// REDUCE: applies an allowed global to its arguments, as data.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        let Value::Tuple(args) = args else {
            return Err(format!("REDUCE arguments are a {}", args.kind()));
        };
        match callable {
            Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Value::Global(Global::RebuildTensorV2) => rebuild_tensor(args),
            Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
                Some(t @ Value::Tensor(_)) => Ok(t),
                _ => Err("_rebuild_parameter without a tensor".into()),
            },
            other => Err(format!("REDUCE of a {} is not allowed", other.kind())),
        }
    }

    /// BINPERSID: torch's `('storage', StorageClass, key, location, numel)`.
    fn persistent(&mut self, pid: Value) -> Result<Value, String> {
        let bad = || "a persistent id that is not a torch storage".to_string();
        let Value::Tuple(t) = pid else {
            return Err(bad());
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _, Value::Int(numel)]
                if tag == "storage" && *numel >= 0 =>
            {
                Ok(Value::Storage(StorageRef {
                    key: key.clone(),
                    dtype: *dtype,
                    numel: *numel as u64,
                }))
            }
            _ => Err(bad()),
        }
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is not supported"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Item::Mark),
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(format!("an integer of {n} bytes at byte {at}"));
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n); // sign-extend
                    }
                    self.push(Value::Int(v))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.push(Value::Str(s))?
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(Value::Bytes(b))?
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))?
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b'c' => {
                    let g = self.global()?;
                    self.push(g)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: an OrderedDict's `__dict__` (torch's `_metadata`) or a tensor's
                    // state; neither changes the tensors, so the state is dropped.
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => return Err(format!("BUILD on a {}", other.kind())),
                    }
                }
                _ => {
                    return Err(format!(
                        "opcode 0x{op:02x} at byte {at} is not allowed in a checkpoint"
                    ))
                }
            }
        }
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)`.
fn rebuild_tensor(args: Vec<Value>) -> Result<Value, String> {
    let ints = |v: &Value, what: &str| -> Result<Vec<usize>, String> {
        match v {
            Value::Tuple(t) => t
                .iter()
                .map(|x| match x {
                    Value::Int(i) if *i >= 0 => Ok(*i as usize),
                    _ => Err(format!("a tensor {what} that is not a tuple of sizes")),
                })
                .collect(),
            _ => Err(format!("a tensor {what} that is not a tuple")),
        }
    };
    match args.as_slice() {
        [Value::Storage(s), Value::Int(off), size, stride, ..] if *off >= 0 => {
            let shape = ints(size, "size")?;
            let stride = ints(stride, "stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "a tensor with {} sizes but {} strides",
                    shape.len(),
                    stride.len()
                ));
            }
            Ok(Value::Tensor(TensorRef {
                storage: s.clone(),
                offset: *off as u64,
                shape,
                stride,
            }))
        }
        _ => Err("_rebuild_tensor_v2 with arguments that do not describe a tensor".into()),
    }
}
