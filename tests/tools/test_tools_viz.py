"""tinyllm.viz: the DOT text of known graphs, node and edge by node and edge; rendering."""

import re
import shutil

import numpy as np
import pytest

import tinyllm
import tinyllm.functional as F
from tinyllm import nn, viz
from tinyllm.function import live_graph_nodes

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"')
EDGE = re.compile(r'^\s*(\w+) -> (\w+)(?: \[label="([^"]*)"\])?;$')


def parse_dot(text):
    """{node id: label lines} and [(source, target, edge label)] from to_dot's output."""
    nodes, edges = {}, []
    for line in text.splitlines():
        edge = EDGE.match(line)
        if edge:
            edges.append(edge.groups())
            continue
        node = NODE.match(line)
        if node and node.group(1) not in ("graph", "node", "edge"):
            nodes[node.group(1)] = node.group(2).split("\\n")
    return nodes, edges


def small_graph():
    """y = sum(tanh(x * w)), x [3, 4] and w [4] (broadcast), float64."""
    x = tinyllm.tensor(np.arange(12.0).reshape(3, 4) / 10, requires_grad=True)
    w = nn.Parameter(tinyllm.tensor(np.ones(4)))
    return x, w, (x * w).tanh().sum()


def test_known_graph_has_exact_nodes_edges_shapes_and_saved_bytes():
    x, w, y = small_graph()
    text = viz.to_dot(y, params={"x": x, "w": w})
    assert text.startswith("digraph tinyllm {") and text.rstrip().endswith("}")
    nodes, edges = parse_dot(text)
    assert len(nodes) == 6 and len(edges) == 5
    assert nodes["op0"] == ["Mul", "out: f64[3, 4]", "saved: a f64[3, 4] 96 B", "b f64[4] 32 B"]
    assert nodes["op1"] == ["Tanh", "out: f64[3, 4]", "saved: output f64[3, 4] 96 B"]
    assert nodes["op2"] == ["Sum", "out: f64[]", "saved: nothing"]
    assert nodes["leaf0"] == ["x", "f64[3, 4]"]
    assert nodes["leaf1"] == ["w", "f64[4]"]
    assert nodes["output"] == ["output", "f64[]"]
    assert sorted(edges) == sorted(
        [
            ("leaf0", "op0", None),
            ("leaf1", "op0", None),
            ("op0", "op1", None),
            ("op1", "op2", None),
            ("op2", "output", None),
        ]
    )
    assert 'label="3 ops, 224 B saved for backward (3 arrays)"' in text


def test_module_parameters_are_named_and_inputs_are_marked():
    tinyllm.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    x = tinyllm.randn(4, 5)
    target = tinyllm.tensor([0, 2, 1, 0])
    loss = F.cross_entropy(model(x), target)
    for params in (model, model.named_parameters(), dict(model.named_parameters())):
        nodes, edges = parse_dot(viz.to_dot(loss, params=params))
        ops = [nodes[f"op{i}"][0] for i in range(4)]
        assert ops == ["Linear", "Tanh", "Linear", "CrossEntropy"]
        leaves = {label[0]: label[1] for n, label in nodes.items() if n.startswith("leaf")}
        assert leaves == {
            "input": "f32[4, 5]",
            "0.weight": "f32[7, 5]",
            "0.bias": "f32[7]",
            "2.weight": "f32[3, 7]",
            "2.bias": "f32[3]",
        }
        assert nodes["op0"][1] == "out: f32[4, 7]" and nodes["op2"][1] == "out: f32[4, 3]"
        assert "weight f32[7, 5] 140 B" in nodes["op0"]
        assert len(edges) == 3 + 1 + 3 + 1 + 1


def test_without_params_leaves_are_labeled_by_kind():
    x = tinyllm.tensor(np.ones((2, 3)), requires_grad=True)
    p = nn.Parameter(tinyllm.tensor(np.ones(3)))
    nodes, _ = parse_dot(viz.to_dot((x + p + tinyllm.tensor(np.ones(3))).sum()))
    leaves = sorted(label[0] for n, label in nodes.items() if n.startswith("leaf"))
    assert leaves == ["input", "leaf (requires grad)", "parameter"]


def test_each_argument_is_an_edge_and_multi_output_edges_name_the_output():
    x = tinyllm.tensor(np.ones((3, 4)), requires_grad=True)
    nodes, edges = parse_dot(viz.to_dot((x * x).sum()))
    assert edges.count(("leaf0", "op0", None)) == 2
    a, b = x.split(2, dim=1)
    nodes, edges = parse_dot(viz.to_dot((a * b).sum()))
    assert nodes["op0"][:2] == ["Split", "out: f64[3, 2], f64[3, 2]"]
    assert ("op0", "op1", "[0]") in edges and ("op0", "op1", "[1]") in edges
    _, edges = parse_dot(viz.to_dot(b))
    assert edges == [("leaf0", "op0", None), ("op0", "output", "[1]")]


def test_freed_graph_says_so_and_leaf_root_is_one_node():
    _, _, y = small_graph()
    y.backward()
    nodes, _ = parse_dot(viz.to_dot(y))
    assert nodes["op0"][2] == "saved: freed by backward"
    leaf = tinyllm.tensor(np.ones(2), requires_grad=True)
    nodes, edges = parse_dot(viz.to_dot(leaf))
    assert set(nodes) == {"leaf0", "output"} and edges == [("leaf0", "output", None)]


def test_to_dot_keeps_no_reference_to_the_graph():
    before = live_graph_nodes()
    _, _, y = small_graph()
    assert live_graph_nodes() == before + 3
    viz.to_dot(y)
    del y
    assert live_graph_nodes() == before


def test_labels_are_escaped_and_bad_arguments_raise_clearly():
    x = tinyllm.tensor(np.ones(2), requires_grad=True)
    text = viz.to_dot((x * 2).sum(), params={'odd "name"\\': x})
    assert 'label="odd \\"name\\"\\\\\\nf64[2]"' in text
    with pytest.raises(TypeError, match="expected a Tensor"):
        viz.to_dot(np.ones(2))
    with pytest.raises(TypeError, match="params must"):
        viz.to_dot(x, params=3)


def test_render_without_dot_raises_with_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    _, _, y = small_graph()
    with pytest.raises(RuntimeError, match="Graphviz's `dot` program was not found"):
        viz.render(y, tmp_path / "g.svg")
    with pytest.raises(ValueError, match="picture format"):
        viz.render(y, tmp_path / "g.txt")


@pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz `dot` is not installed (apt-get install graphviz)"
)
def test_render_svg_and_png(tmp_path):
    _, _, y = small_graph()
    svg = viz.render(y, tmp_path / "g.svg")
    assert "<svg" in svg.read_text() and "Tanh" in svg.read_text()
    png = viz.render(y, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_bytes():
    assert [viz.format_bytes(n) for n in (0, 1023, 1536, 3 * 2**20)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "3.0 MiB",
    ]
