//! A small append-only builder over tract-onnx's protobuf types: nodes with unique output
//! names, typed initializers, cached integer constants, and the attribute constructors the
//! Llama writer needs. It knows nothing about Llama.

use std::collections::HashMap;

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto;
use tract_onnx::pb::{
    AttributeProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Domain of onnxruntime's contrib operators (`MatMulNBits`, `GatherBlockQuantized`).
pub const MS_DOMAIN: &str = "com.microsoft";

/// One dimension of a declared input or output: fixed, or named symbolically.
#[derive(Clone, Debug)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A `dim_param` (a symbol or an expression over symbols).
    Named(&'static str),
}

/// Nodes and initializers of one graph, in insertion order.
#[derive(Default)]
pub struct GraphBuilder {
    /// Nodes in topological (insertion) order.
    pub nodes: Vec<NodeProto>,
    /// Weight and constant tensors.
    pub initializers: Vec<TensorProto>,
    i64_consts: HashMap<Vec<i64>, String>,
    f32_scalars: HashMap<u32, String>,
    used_names: HashMap<String, usize>,
}

impl GraphBuilder {
    /// A name not yet used by any node output or initializer, derived from `hint`.
    fn unique(&mut self, hint: &str) -> String {
        let n = self.used_names.entry(hint.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            hint.to_string()
        } else {
            format!("{hint}_{}", *n - 1)
        }
    }

    /// Appends a default-domain node with one output named after `name`; returns that output.
    pub fn op(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        self.op_in(name, "", op_type, inputs, attrs)
    }

    /// Appends a node of `domain` with one output named after `name`; returns that output.
    pub fn op_in(
        &mut self,
        name: &str,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> String {
        let out = self.unique(name);
        self.node_with_outputs(&out, domain, op_type, inputs, attrs, vec![out.clone()]);
        out
    }

    /// Appends a default-domain node with `outputs` outputs named after `name`; returns them.
    pub fn op_multi(
        &mut self,
        name: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let node = self.unique(name);
        let outs: Vec<String> = (0..outputs)
            .map(|i| self.unique(&format!("{node}.{i}")))
            .collect();
        self.node_with_outputs(&node, "", op_type, inputs, attrs, outs.clone());
        outs
    }

    fn node_with_outputs(
        &mut self,
        name: &str,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: Vec<String>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs,
            name: name.to_string(),
            op_type: op_type.to_string(),
            domain: domain.to_string(),
            attribute: attrs,
            doc_string: String::new(),
        });
    }

    fn initializer(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: DataType,
        raw: Vec<u8>,
    ) -> String {
        let name = self.unique(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            name: name.clone(),
            raw_data: raw,
            ..TensorProto::default()
        });
        name
    }

    /// Adds an f32 initializer (row-major `dims`).
    pub fn init_f32(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, dims, DataType::Float, raw)
    }

    /// Adds a uint8 initializer.
    pub fn init_u8(&mut self, name: &str, dims: &[usize], data: Vec<u8>) -> String {
        self.initializer(name, dims, DataType::Uint8, data)
    }

    /// Adds an int8 initializer.
    pub fn init_i8(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|v| v.to_le_bytes()[0]).collect();
        self.initializer(name, dims, DataType::Int8, raw)
    }

    /// A 1-D int64 constant (shapes, axes, slice bounds), shared between its users.
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.i64_consts.get(values) {
            return name.clone();
        }
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let name = self.initializer("const_i64", &[values.len()], DataType::Int64, raw);
        self.i64_consts.insert(values.to_vec(), name.clone());
        name
    }

    /// A 0-D int64 constant.
    pub fn int_scalar(&mut self, value: i64) -> String {
        self.initializer(
            "scalar_i64",
            &[],
            DataType::Int64,
            value.to_le_bytes().to_vec(),
        )
    }

    /// A 0-D f32 constant, shared between its users.
    pub fn float_scalar(&mut self, value: f32) -> String {
        if let Some(name) = self.f32_scalars.get(&value.to_bits()) {
            return name.clone();
        }
        let name = self.initializer(
            "scalar_f32",
            &[],
            DataType::Float,
            value.to_le_bytes().to_vec(),
        );
        self.f32_scalars.insert(value.to_bits(), name.clone());
        name
    }
}

/// Declares a graph input or output of `elem` type and `dims`.
pub fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v as i64),
                Dim::Named(s) => dimension::Value::DimParam(s.to_string()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

/// An integer attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A float attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value,
        ..Default::default()
    }
}

/// A list-of-integers attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}
