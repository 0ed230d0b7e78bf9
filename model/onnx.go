package model

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/surgeworks/surge/model/onnxpb"
)

// Names and versions of the ONNX form.
const (
	InputName  = "input"  // float tensor [N, NumFeatures]
	OutputName = "demand" // float tensor [N, 1]
	// ScoreName is the tree ensemble's output (the raw score, float
	// [N, 1]) when an Exp node follows it (LinkExp).
	ScoreName = "score"

	IRVersion   = 8  // ONNX IR version written
	OpsetONNX   = 17 // default-domain opset written
	OpsetML     = 3  // ai.onnx.ml opset written
	mlDomain    = "ai.onnx.ml"
	opType      = "TreeEnsembleRegressor"
	expOpType   = "Exp"
	minExpOpset = 6 // Exp without the legacy consumed_inputs attribute
	producer    = "surge"
	modeLeaf    = "LEAF"
	modeLEQ     = "BRANCH_LEQ"
	maxMLOpset  = 4
	batchDimArg = "N"
)

// Keys of the ONNX metadata_props written from Metadata. Params and Metrics
// are flattened to one key each, prefixed with MetaParamPrefix and
// MetaMetricPrefix.
const (
	MetaName         = "name"
	MetaVersion      = "version"
	MetaSchemaHash   = "schema_hash"
	MetaFeatureNames = "feature_names" // JSON array of strings
	MetaTrainedAt    = "trained_at"    // RFC 3339, nanoseconds
	MetaLink         = "link"          // LinkIdentity or LinkExp; must agree with the graph
	// MetaImportance is a JSON array of FeatureImportance, one per column.
	MetaImportance   = "feature_importance"
	MetaParamPrefix  = "param."
	MetaMetricPrefix = "metric." // value formatted with strconv 'g'
)

// MarshalONNX encodes the ensemble as an ONNX model with one ai.onnx.ml
// TreeEnsembleRegressor node (BRANCH_LEQ splits, SUM aggregation, the base as
// base_values), input InputName [N, NumFeatures] and output OutputName [N, 1].
// With LinkExp the tree node writes ScoreName and a default-domain Exp node
// (opset 17) turns it into OutputName, so ONNX Runtime outputs exp(raw)
// directly. The link is also written to the metadata (MetaLink). Trees keep
// their order; within a tree the node ids are the Nodes indices.
func (e *Ensemble) MarshalONNX() ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("marshal onnx: %w", err)
	}
	trees := e.Trees
	if len(trees) == 0 {
		// A tree ensemble needs at least one tree; a single zero leaf
		// leaves every prediction at exactly Base (0 + Base).
		trees = []Tree{{Nodes: []Node{{Leaf: true}}}}
	}
	n := 0
	leaves := 0
	for _, t := range trees {
		n += len(t.Nodes)
		for _, nd := range t.Nodes {
			if nd.Leaf {
				leaves++
			}
		}
	}
	var (
		treeIDs   = make([]int64, 0, n)
		nodeIDs   = make([]int64, 0, n)
		featIDs   = make([]int64, 0, n)
		modes     = make([][]byte, 0, n)
		values    = make([]float32, 0, n)
		trueIDs   = make([]int64, 0, n)
		falseIDs  = make([]int64, 0, n)
		tTreeIDs  = make([]int64, 0, leaves)
		tNodeIDs  = make([]int64, 0, leaves)
		tIDs      = make([]int64, 0, leaves)
		tWeights  = make([]float32, 0, leaves)
		leafMode  = []byte(modeLeaf)
		splitMode = []byte(modeLEQ)
	)
	for ti, t := range trees {
		for ni, nd := range t.Nodes {
			treeIDs = append(treeIDs, int64(ti))
			nodeIDs = append(nodeIDs, int64(ni))
			if nd.Leaf {
				featIDs = append(featIDs, 0)
				modes = append(modes, leafMode)
				values = append(values, 0)
				trueIDs = append(trueIDs, 0)
				falseIDs = append(falseIDs, 0)
				tTreeIDs = append(tTreeIDs, int64(ti))
				tNodeIDs = append(tNodeIDs, int64(ni))
				tIDs = append(tIDs, 0)
				tWeights = append(tWeights, nd.Value)
				continue
			}
			featIDs = append(featIDs, int64(nd.Feature))
			modes = append(modes, splitMode)
			values = append(values, nd.Threshold)
			trueIDs = append(trueIDs, int64(nd.True))
			falseIDs = append(falseIDs, int64(nd.False))
		}
	}
	treesOut := OutputName
	if e.Link == LinkExp {
		treesOut = ScoreName
	}
	node := &onnxpb.NodeProto{
		Name:   proto.String("trees"),
		OpType: proto.String(opType),
		Domain: proto.String(mlDomain),
		Input:  []string{InputName},
		Output: []string{treesOut},
		Attribute: []*onnxpb.AttributeProto{
			attrString("aggregate_function", "SUM"),
			attrFloats("base_values", []float32{e.Base}),
			attrInt("n_targets", 1),
			attrInts("nodes_falsenodeids", falseIDs),
			attrInts("nodes_featureids", featIDs),
			{Name: proto.String("nodes_modes"), Type: onnxpb.AttributeProto_STRINGS.Enum(), Strings: modes},
			attrInts("nodes_nodeids", nodeIDs),
			attrInts("nodes_treeids", treeIDs),
			attrInts("nodes_truenodeids", trueIDs),
			attrFloats("nodes_values", values),
			attrString("post_transform", "NONE"),
			attrInts("target_ids", tIDs),
			attrInts("target_nodeids", tNodeIDs),
			attrInts("target_treeids", tTreeIDs),
			attrFloats("target_weights", tWeights),
		},
	}
	nodes := []*onnxpb.NodeProto{node}
	link := LinkIdentity
	if e.Link == LinkExp {
		link = LinkExp
		nodes = append(nodes, &onnxpb.NodeProto{
			Name:   proto.String("link"),
			OpType: proto.String(expOpType),
			Domain: proto.String(""),
			Input:  []string{ScoreName},
			Output: []string{OutputName},
		})
	}
	graphName := e.Meta.Name
	if graphName == "" {
		graphName = "model"
	}
	m := &onnxpb.ModelProto{
		IrVersion:       proto.Int64(IRVersion),
		ProducerName:    proto.String(producer),
		ProducerVersion: proto.String(e.Meta.Version),
		OpsetImport: []*onnxpb.OperatorSetIdProto{
			{Domain: proto.String(""), Version: proto.Int64(OpsetONNX)},
			{Domain: proto.String(mlDomain), Version: proto.Int64(OpsetML)},
		},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String(graphName),
			Node:   nodes,
			Input:  []*onnxpb.ValueInfoProto{floatMatrix(InputName, int64(e.NumFeatures))},
			Output: []*onnxpb.ValueInfoProto{floatMatrix(OutputName, 1)},
		},
	}
	props, err := metaProps(e.Meta, link)
	if err != nil {
		return nil, fmt.Errorf("marshal onnx: %w", err)
	}
	m.MetadataProps = props
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal onnx: %w", err)
	}
	return b, nil
}

func attrString(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v []int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrFloats(name string, v []float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: v}
}

func floatMatrix(name string, cols int64) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
				{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: batchDimArg}},
				{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: cols}},
			}},
		}}},
	}
}

func metaProps(md Metadata, link string) ([]*onnxpb.StringStringEntryProto, error) {
	var props []*onnxpb.StringStringEntryProto
	add := func(k, v string) {
		props = append(props, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(v)})
	}
	add(MetaName, md.Name)
	add(MetaVersion, md.Version)
	add(MetaSchemaHash, md.SchemaHash)
	add(MetaLink, link)
	if md.FeatureNames != nil {
		b, err := json.Marshal(md.FeatureNames)
		if err != nil {
			return nil, fmt.Errorf("feature names: %w", err)
		}
		add(MetaFeatureNames, string(b))
	}
	if !md.TrainedAt.IsZero() {
		add(MetaTrainedAt, md.TrainedAt.UTC().Format(time.RFC3339Nano))
	}
	if md.Importance != nil {
		b, err := json.Marshal(md.Importance)
		if err != nil {
			return nil, fmt.Errorf("feature importance: %w", err)
		}
		add(MetaImportance, string(b))
	}
	for _, k := range slices.Sorted(maps.Keys(md.Params)) {
		add(MetaParamPrefix+k, md.Params[k])
	}
	for _, k := range slices.Sorted(maps.Keys(md.Metrics)) {
		add(MetaMetricPrefix+k, strconv.FormatFloat(md.Metrics[k], 'g', -1, 64))
	}
	return props, nil
}

// UnmarshalONNX decodes a model written by MarshalONNX: a graph of exactly
// one TreeEnsembleRegressor (float thresholds, BRANCH_LEQ, SUM, one target,
// no post transform, NaN to the false branch) from the input to the output
// (Link LinkIdentity), or that node followed by one default-domain Exp node
// from its output to the graph's output (Link LinkExp). A MetaLink entry, when
// present, must agree with the graph. Anything else, including corrupt bytes,
// is refused with an error wrapping ErrInvalidModel. The result is validated.
func UnmarshalONNX(b []byte) (*Ensemble, error) {
	e, err := decodeONNX(b)
	if err != nil {
		return nil, fmt.Errorf("unmarshal onnx: %w", err)
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("unmarshal onnx: %w", err)
	}
	return e, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidModel}, args...)...)
}

func decodeONNX(b []byte) (*Ensemble, error) {
	if len(b) == 0 {
		return nil, invalid("empty file")
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: not an ONNX protobuf: %w", ErrInvalidModel, err)
	}
	if m.IrVersion == nil || m.GetIrVersion() <= 0 {
		return nil, invalid("no ir_version")
	}
	mlOpset, onnxOpset := int64(0), int64(0)
	for _, op := range m.GetOpsetImport() {
		switch op.GetDomain() {
		case mlDomain:
			mlOpset = op.GetVersion()
		case "", "ai.onnx":
			onnxOpset = op.GetVersion()
		}
	}
	if mlOpset < 1 || mlOpset > maxMLOpset {
		return nil, invalid("ai.onnx.ml opset %d not supported (want 1..%d)", mlOpset, maxMLOpset)
	}
	g := m.GetGraph()
	if g == nil {
		return nil, invalid("no graph")
	}
	if len(g.GetInput()) != 1 || len(g.GetOutput()) != 1 {
		return nil, invalid("graph has %d inputs and %d outputs, want 1 and 1", len(g.GetInput()), len(g.GetOutput()))
	}
	in, out := g.GetInput()[0], g.GetOutput()[0]
	nd, link, err := graphShape(g.GetNode(), in.GetName(), out.GetName(), onnxOpset)
	if err != nil {
		return nil, err
	}
	cols, err := matrixCols(in)
	if err != nil {
		return nil, err
	}
	if cols <= 0 || cols > 1<<20 {
		return nil, invalid("input %q has %d columns", in.GetName(), cols)
	}

	a, err := readAttrs(nd.GetAttribute())
	if err != nil {
		return nil, err
	}
	e := &Ensemble{NumFeatures: int(cols), Link: link}
	switch len(a.baseValues) {
	case 0:
	case 1:
		e.Base = a.baseValues[0]
	default:
		return nil, invalid("%d base_values for one target", len(a.baseValues))
	}
	if e.Trees, err = buildTrees(a); err != nil {
		return nil, err
	}
	var metaLink string
	if e.Meta, metaLink, err = readMeta(m.GetMetadataProps()); err != nil {
		return nil, err
	}
	if metaLink != "" && metaLink != link {
		return nil, invalid("metadata %s is %q but the graph computes %q", MetaLink, metaLink, link)
	}
	return e, nil
}

// graphShape checks that nodes are one of the two graphs MarshalONNX writes
// and returns the tree ensemble node and the link.
func graphShape(nodes []*onnxpb.NodeProto, in, out string, onnxOpset int64) (*onnxpb.NodeProto, string, error) {
	if len(nodes) != 1 && len(nodes) != 2 {
		return nil, "", invalid("graph has %d nodes, want one %s, optionally followed by %s", len(nodes), opType, expOpType)
	}
	nd := nodes[0]
	if nd.GetOpType() != opType || nd.GetDomain() != mlDomain {
		return nil, "", invalid("node is %s.%s, want %s.%s", nd.GetDomain(), nd.GetOpType(), mlDomain, opType)
	}
	if len(nd.GetInput()) != 1 || nd.GetInput()[0] != in || len(nd.GetOutput()) != 1 {
		return nil, "", invalid("tree node inputs/outputs %v/%v, want [%q] and one output", nd.GetInput(), nd.GetOutput(), in)
	}
	score := nd.GetOutput()[0]
	if len(nodes) == 1 {
		if score != out {
			return nil, "", invalid("tree node output %q is not the graph output %q", score, out)
		}
		return nd, LinkIdentity, nil
	}
	ex := nodes[1]
	if ex.GetOpType() != expOpType || (ex.GetDomain() != "" && ex.GetDomain() != "ai.onnx") {
		return nil, "", invalid("second node is %s.%s, want %s", ex.GetDomain(), ex.GetOpType(), expOpType)
	}
	if onnxOpset < minExpOpset {
		return nil, "", invalid("default-domain opset %d, want at least %d for %s", onnxOpset, minExpOpset, expOpType)
	}
	if len(ex.GetAttribute()) != 0 {
		return nil, "", invalid("%s node has attributes", expOpType)
	}
	if score == in || score == out || len(ex.GetInput()) != 1 || ex.GetInput()[0] != score ||
		len(ex.GetOutput()) != 1 || ex.GetOutput()[0] != out {
		return nil, "", invalid("nodes do not chain %q -> %s -> %s -> %q", in, opType, expOpType, out)
	}
	return nd, LinkExp, nil
}

func matrixCols(v *onnxpb.ValueInfoProto) (int64, error) {
	tt := v.GetType().GetTensorType()
	if tt == nil || tt.GetElemType() != int32(onnxpb.TensorProto_FLOAT) {
		return 0, invalid("input %q is not a float tensor", v.GetName())
	}
	dims := tt.GetShape().GetDim()
	if len(dims) != 2 {
		return 0, invalid("input %q has rank %d, want 2", v.GetName(), len(dims))
	}
	dv, ok := dims[1].GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue)
	if !ok {
		return 0, invalid("input %q has no fixed column count", v.GetName())
	}
	return dv.DimValue, nil
}

type treeAttrs struct {
	baseValues                     []float32
	treeIDs, nodeIDs, featIDs      []int64
	trueIDs, falseIDs, missingTrue []int64
	modes                          [][]byte
	values                         []float32
	tTreeIDs, tNodeIDs, tIDs       []int64
	tWeights                       []float32
	nTargets                       int64
	aggregate, postTransform       string
}

func readAttrs(attrs []*onnxpb.AttributeProto) (*treeAttrs, error) {
	a := &treeAttrs{nTargets: 1, aggregate: "SUM", postTransform: "NONE"}
	for _, at := range attrs {
		switch at.GetName() {
		case "aggregate_function":
			a.aggregate = string(at.GetS())
		case "post_transform":
			a.postTransform = string(at.GetS())
		case "n_targets":
			a.nTargets = at.GetI()
		case "base_values":
			a.baseValues = at.GetFloats()
		case "nodes_treeids":
			a.treeIDs = at.GetInts()
		case "nodes_nodeids":
			a.nodeIDs = at.GetInts()
		case "nodes_featureids":
			a.featIDs = at.GetInts()
		case "nodes_truenodeids":
			a.trueIDs = at.GetInts()
		case "nodes_falsenodeids":
			a.falseIDs = at.GetInts()
		case "nodes_missing_value_tracks_true":
			a.missingTrue = at.GetInts()
		case "nodes_modes":
			a.modes = at.GetStrings()
		case "nodes_values":
			a.values = at.GetFloats()
		case "target_treeids":
			a.tTreeIDs = at.GetInts()
		case "target_nodeids":
			a.tNodeIDs = at.GetInts()
		case "target_ids":
			a.tIDs = at.GetInts()
		case "target_weights":
			a.tWeights = at.GetFloats()
		case "nodes_hitrates":
			// Not used for inference.
		default:
			// Includes the *_as_tensor (double) forms, whose arithmetic
			// differs from the float evaluator.
			return nil, invalid("unsupported attribute %q", at.GetName())
		}
	}
	if a.aggregate != "SUM" {
		return nil, invalid("aggregate_function %q, want SUM", a.aggregate)
	}
	if a.postTransform != "NONE" {
		return nil, invalid("post_transform %q, want NONE", a.postTransform)
	}
	if a.nTargets != 1 {
		return nil, invalid("n_targets %d, want 1", a.nTargets)
	}
	n := len(a.treeIDs)
	if n == 0 {
		return nil, invalid("no tree nodes")
	}
	if len(a.nodeIDs) != n || len(a.featIDs) != n || len(a.trueIDs) != n || len(a.falseIDs) != n ||
		len(a.modes) != n || len(a.values) != n {
		return nil, invalid("nodes_* attributes have different lengths")
	}
	if len(a.missingTrue) != 0 && len(a.missingTrue) != n {
		return nil, invalid("nodes_missing_value_tracks_true has %d entries for %d nodes", len(a.missingTrue), n)
	}
	for i, v := range a.missingTrue {
		if v != 0 {
			return nil, invalid("node %d sends missing values to the true branch", i)
		}
	}
	k := len(a.tTreeIDs)
	if len(a.tNodeIDs) != k || len(a.tIDs) != k || len(a.tWeights) != k {
		return nil, invalid("target_* attributes have different lengths")
	}
	return a, nil
}

// buildTrees groups the nodes by tree in the order the trees first appear
// (ONNX Runtime's order of summation) and makes each tree's first listed
// node its root (ONNX Runtime's choice of root).
func buildTrees(a *treeAttrs) ([]Tree, error) {
	type key struct{ tree, node int64 }
	pos := make(map[key]int32, len(a.treeIDs)) // node -> index within its tree
	var trees []Tree
	treeIndex := map[int64]int{}
	for i, tid := range a.treeIDs {
		ti, ok := treeIndex[tid]
		if !ok {
			ti = len(trees)
			treeIndex[tid] = ti
			trees = append(trees, Tree{})
		} else if ti != len(trees)-1 {
			return nil, invalid("nodes of tree %d are not contiguous", tid)
		}
		k := key{tid, a.nodeIDs[i]}
		if _, dup := pos[k]; dup {
			return nil, invalid("node %d of tree %d is listed twice", a.nodeIDs[i], tid)
		}
		pos[k] = int32(len(trees[ti].Nodes))
		switch mode := string(a.modes[i]); mode {
		case modeLeaf:
			trees[ti].Nodes = append(trees[ti].Nodes, Node{Leaf: true})
		case modeLEQ:
			f := a.featIDs[i]
			if f < 0 || f > 1<<30 {
				return nil, invalid("node %d of tree %d has feature %d", a.nodeIDs[i], tid, f)
			}
			trees[ti].Nodes = append(trees[ti].Nodes, Node{Feature: int32(f), Threshold: a.values[i]})
		default:
			return nil, invalid("node %d of tree %d has mode %q, want %s or %s", a.nodeIDs[i], tid, mode, modeLEQ, modeLeaf)
		}
	}
	for i, tid := range a.treeIDs {
		n := &trees[treeIndex[tid]].Nodes[pos[key{tid, a.nodeIDs[i]}]]
		if n.Leaf {
			continue
		}
		t, ok1 := pos[key{tid, a.trueIDs[i]}]
		f, ok2 := pos[key{tid, a.falseIDs[i]}]
		if !ok1 || !ok2 {
			return nil, invalid("node %d of tree %d points to a missing child", a.nodeIDs[i], tid)
		}
		n.True, n.False = t, f
	}
	hasWeight := make(map[key]bool, len(a.tTreeIDs))
	for j, tid := range a.tTreeIDs {
		k := key{tid, a.tNodeIDs[j]}
		p, ok := pos[k]
		if !ok {
			return nil, invalid("target weight %d names missing node %d of tree %d", j, k.node, tid)
		}
		if a.tIDs[j] != 0 {
			return nil, invalid("target weight %d is for target %d, want 0", j, a.tIDs[j])
		}
		n := &trees[treeIndex[tid]].Nodes[p]
		if !n.Leaf {
			return nil, invalid("target weight %d is on split node %d of tree %d", j, k.node, tid)
		}
		if hasWeight[k] {
			return nil, invalid("leaf %d of tree %d has several weights", k.node, tid)
		}
		hasWeight[k] = true
		n.Value = a.tWeights[j]
	}
	for i, tid := range a.treeIDs {
		k := key{tid, a.nodeIDs[i]}
		if string(a.modes[i]) == modeLeaf && !hasWeight[k] {
			return nil, invalid("leaf %d of tree %d has no weight", k.node, tid)
		}
	}
	return trees, nil
}

// readMeta decodes the metadata and returns the MetaLink entry apart.
func readMeta(props []*onnxpb.StringStringEntryProto) (md Metadata, link string, err error) {
	for _, p := range props {
		k, v := p.GetKey(), p.GetValue()
		switch {
		case k == MetaLink:
			if v != LinkIdentity && v != LinkExp {
				return md, "", invalid("metadata %s %q (want %q or %q)", k, v, LinkIdentity, LinkExp)
			}
			link = v
		case k == MetaImportance:
			if err := json.Unmarshal([]byte(v), &md.Importance); err != nil {
				return md, "", fmt.Errorf("%w: metadata %s: %w", ErrInvalidModel, k, err)
			}
		case k == MetaName:
			md.Name = v
		case k == MetaVersion:
			md.Version = v
		case k == MetaSchemaHash:
			md.SchemaHash = v
		case k == MetaFeatureNames:
			if err := json.Unmarshal([]byte(v), &md.FeatureNames); err != nil {
				return md, "", fmt.Errorf("%w: metadata %s: %w", ErrInvalidModel, k, err)
			}
		case k == MetaTrainedAt:
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return md, "", fmt.Errorf("%w: metadata %s: %w", ErrInvalidModel, k, err)
			}
			md.TrainedAt = t
		case strings.HasPrefix(k, MetaParamPrefix):
			if md.Params == nil {
				md.Params = map[string]string{}
			}
			md.Params[strings.TrimPrefix(k, MetaParamPrefix)] = v
		case strings.HasPrefix(k, MetaMetricPrefix):
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return md, "", fmt.Errorf("%w: metadata %s: %w", ErrInvalidModel, k, err)
			}
			if md.Metrics == nil {
				md.Metrics = map[string]float64{}
			}
			md.Metrics[strings.TrimPrefix(k, MetaMetricPrefix)] = f
		}
	}
	return md, link, nil
}
