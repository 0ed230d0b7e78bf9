package model

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/surgeworks/surge/model/onnxpb"
)

func sampleMeta(features int) Metadata {
	names := make([]string, features)
	for i := range names {
		names[i] = "f" + string(rune('a'+i%26))
	}
	return Metadata{
		Name:         "demand",
		Version:      "v-test-1",
		SchemaHash:   "0123456789abcdef",
		FeatureNames: names,
		TrainedAt:    time.Date(2026, 3, 1, 12, 30, 0, 123456789, time.UTC),
		Params:       map[string]string{"trees": "3", "learning_rate": "0.1"},
		Metrics:      map[string]float64{"rmse": 1.25, "wape": 0.1 + 0.2, "nan": math.NaN()},
	}
}

func TestONNXRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	tests := []struct {
		name string
		e    *Ensemble
	}{
		{"random 30 trees depth 5", randomEnsemble(rng, 30, 5, 12)},
		{"stump", &Ensemble{Trees: []Tree{stump()}, NumFeatures: 2, Base: 1.5}},
		{"single leaf trees", &Ensemble{Trees: []Tree{{Nodes: []Node{{Leaf: true, Value: 3}}}}, NumFeatures: 1}},
		{"exp link", func() *Ensemble { e := randomEnsemble(rng, 20, 4, 7); e.Link = LinkExp; return e }()},
		{"explicit identity link", &Ensemble{Trees: []Tree{stump()}, NumFeatures: 2, Base: -2, Link: LinkIdentity}},
		{"exp link without trees", &Ensemble{NumFeatures: 2, Base: 1.5, Link: LinkExp}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.e.Meta = sampleMeta(tt.e.NumFeatures)
			for i := range tt.e.NumFeatures {
				tt.e.Meta.Importance = append(tt.e.Meta.Importance, FeatureImportance{Gain: float64(i) * 0.1, Splits: i})
			}
			b, err := tt.e.MarshalONNX()
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalONNX(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Trees, tt.e.Trees) || got.Base != tt.e.Base || got.NumFeatures != tt.e.NumFeatures {
				if len(tt.e.Trees) != 0 || len(got.Trees) != 1 || got.Base != tt.e.Base {
					t.Fatalf("trees/base/features differ after round trip")
				}
			}
			if wantLink := linkOf(tt.e); got.Link != wantLink {
				t.Fatalf("link %q after round trip, want %q", got.Link, wantLink)
			}
			if !reflect.DeepEqual(got.Meta.Importance, tt.e.Meta.Importance) {
				t.Fatalf("importance %+v after round trip, want %+v", got.Meta.Importance, tt.e.Meta.Importance)
			}
			row := make([]float32, tt.e.NumFeatures)
			if a, b := got.Predict(row), tt.e.Predict(row); math.Float32bits(a) != math.Float32bits(b) {
				t.Fatalf("Predict %v after round trip, %v before", a, b)
			}
			want := tt.e.Meta
			if got.Meta.Name != want.Name || got.Meta.Version != want.Version || got.Meta.SchemaHash != want.SchemaHash ||
				!reflect.DeepEqual(got.Meta.FeatureNames, want.FeatureNames) || !got.Meta.TrainedAt.Equal(want.TrainedAt) ||
				!reflect.DeepEqual(got.Meta.Params, want.Params) {
				t.Fatalf("metadata differs: got %+v, want %+v", got.Meta, want)
			}
			if got.Meta.Metrics["rmse"] != 1.25 || got.Meta.Metrics["wape"] != 0.1+0.2 || !math.IsNaN(got.Meta.Metrics["nan"]) {
				t.Fatalf("metrics differ: %v", got.Meta.Metrics)
			}
			b2, err := got.MarshalONNX()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("encoding is not deterministic")
			}
		})
	}
}

func linkOf(e *Ensemble) string {
	if e.Link == "" {
		return LinkIdentity
	}
	return e.Link
}

// The two graphs MarshalONNX writes: the tree node alone, or followed by Exp
// (default domain, opset 17) for the exp link.
func TestMarshalONNXGraphShape(t *testing.T) {
	for _, link := range []string{"", LinkIdentity, LinkExp} {
		e := &Ensemble{Trees: []Tree{stump()}, NumFeatures: 2, Link: link}
		b, err := e.MarshalONNX()
		if err != nil {
			t.Fatal(err)
		}
		var m onnxpb.ModelProto
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var ops []string
		for _, n := range m.Graph.Node {
			ops = append(ops, n.GetDomain()+":"+n.GetOpType()+":"+strings.Join(n.Input, ",")+"->"+strings.Join(n.Output, ","))
		}
		want := []string{"ai.onnx.ml:TreeEnsembleRegressor:input->demand"}
		if link == LinkExp {
			want = []string{"ai.onnx.ml:TreeEnsembleRegressor:input->score", ":Exp:score->demand"}
		}
		if !reflect.DeepEqual(ops, want) {
			t.Fatalf("link %q: nodes %v, want %v", link, ops, want)
		}
		var metaLink string
		for _, p := range m.MetadataProps {
			if p.GetKey() == MetaLink {
				metaLink = p.GetValue()
			}
		}
		if metaLink != linkOf(e) {
			t.Fatalf("link %q: metadata link %q", link, metaLink)
		}
		if m.OpsetImport[0].GetDomain() != "" || m.OpsetImport[0].GetVersion() != OpsetONNX {
			t.Fatalf("default opset import %v", m.OpsetImport[0])
		}
	}
}

func TestONNXEmptyEnsembleKeepsBase(t *testing.T) {
	e := &Ensemble{NumFeatures: 3, Base: 4.25}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalONNX(b)
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Predict([]float32{1, 2, 3}); p != 4.25 {
		t.Fatalf("Predict = %v, want 4.25", p)
	}
}

func TestMarshalRejectsInvalid(t *testing.T) {
	e := &Ensemble{NumFeatures: 1, Trees: []Tree{stump()}}
	if _, err := e.MarshalONNX(); !errors.Is(err, ErrInvalidModel) {
		t.Fatalf("MarshalONNX = %v, want ErrInvalidModel", err)
	}
}

// mutate decodes a valid model, applies f and re-encodes it.
func mutate(t *testing.T, f func(m *onnxpb.ModelProto)) []byte {
	t.Helper()
	return mutateLink(t, "", f)
}

// mutateLink is mutate on a model with the given link.
func mutateLink(t *testing.T, link string, f func(m *onnxpb.ModelProto)) []byte {
	t.Helper()
	e := &Ensemble{Trees: []Tree{stump()}, NumFeatures: 2, Meta: sampleMeta(2), Link: link}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(&m)
	out, err := proto.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func attr(m *onnxpb.ModelProto, name string) *onnxpb.AttributeProto {
	for _, a := range m.Graph.Node[0].Attribute {
		if a.GetName() == name {
			return a
		}
	}
	a := &onnxpb.AttributeProto{Name: proto.String(name)}
	m.Graph.Node[0].Attribute = append(m.Graph.Node[0].Attribute, a)
	return a
}

func TestUnmarshalRejects(t *testing.T) {
	valid := mutate(t, func(*onnxpb.ModelProto) {})
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"text", []byte("this is not an onnx model, just some text\n")},
		{"truncated", valid[:len(valid)/2]},
		{"random bytes", func() []byte {
			rng := rand.New(rand.NewPCG(1, 1))
			b := make([]byte, 4096)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			return b
		}()},
		{"empty proto", mutate(t, func(m *onnxpb.ModelProto) { *m = onnxpb.ModelProto{IrVersion: proto.Int64(8)} })},
		{"no ml opset", mutate(t, func(m *onnxpb.ModelProto) { m.OpsetImport = m.OpsetImport[:1] })},
		{"other op", mutate(t, func(m *onnxpb.ModelProto) { m.Graph.Node[0].OpType = proto.String("TreeEnsembleClassifier") })},
		{"two nodes", mutate(t, func(m *onnxpb.ModelProto) { m.Graph.Node = append(m.Graph.Node, m.Graph.Node[0]) })},
		{"double input", mutate(t, func(m *onnxpb.ModelProto) {
			m.Graph.Input[0].Type.GetTensorType().ElemType = proto.Int32(int32(onnxpb.TensorProto_DOUBLE))
		})},
		{"node input name", mutate(t, func(m *onnxpb.ModelProto) { m.Graph.Node[0].Input[0] = "x" })},
		{"BRANCH_LT", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_modes").Strings[0] = []byte("BRANCH_LT") })},
		{"AVERAGE", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "aggregate_function").S = []byte("AVERAGE") })},
		{"PROBIT", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "post_transform").S = []byte("PROBIT") })},
		{"missing tracks true", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_missing_value_tracks_true").Ints = []int64{1, 0, 0} })},
		{"double thresholds", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_values_as_tensor") })},
		{"two targets", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "n_targets").I = proto.Int64(2) })},
		{"short attribute", mutate(t, func(m *onnxpb.ModelProto) { a := attr(m, "nodes_values"); a.Floats = a.Floats[:2] })},
		{"child missing", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_truenodeids").Ints[0] = 9 })},
		{"self loop", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_truenodeids").Ints[0] = 0 })},
		{"leaf without weight", mutate(t, func(m *onnxpb.ModelProto) {
			for _, n := range []string{"target_ids", "target_nodeids", "target_treeids"} {
				a := attr(m, n)
				a.Ints = a.Ints[:1]
			}
			a := attr(m, "target_weights")
			a.Floats = a.Floats[:1]
		})},
		{"feature beyond input", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "nodes_featureids").Ints[0] = 2 })},
		{"post transform SOFTMAX", mutate(t, func(m *onnxpb.ModelProto) { attr(m, "post_transform").S = []byte("SOFTMAX") })},
		{"identity graph, metadata says exp", mutate(t, func(m *onnxpb.ModelProto) { setProp(m, MetaLink, LinkExp) })},
		{"exp graph, metadata says identity", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { setProp(m, MetaLink, LinkIdentity) })},
		{"unknown metadata link", mutate(t, func(m *onnxpb.ModelProto) { setProp(m, MetaLink, "log") })},
		{"Log instead of Exp", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[1].OpType = proto.String("Log") })},
		{"Exp in the ml domain", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[1].Domain = proto.String(mlDomain) })},
		{"Exp with an attribute", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) {
			m.Graph.Node[1].Attribute = append(m.Graph.Node[1].Attribute, attrInt("consumed_inputs", 1))
		})},
		{"Exp not fed by the trees", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[1].Input[0] = "other" })},
		{"Exp not writing the output", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[1].Output[0] = "other" })},
		{"trees write the output and Exp too", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[0].Output[0] = OutputName })},
		{"Exp first", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node[0], m.Graph.Node[1] = m.Graph.Node[1], m.Graph.Node[0] })},
		{"Exp twice", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.Graph.Node = append(m.Graph.Node, m.Graph.Node[1]) })},
		{"Exp without a default opset", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.OpsetImport = m.OpsetImport[1:] })},
		{"Exp with opset 1", mutateLink(t, LinkExp, func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(1) })},
		{"importance not JSON", mutate(t, func(m *onnxpb.ModelProto) { setProp(m, MetaImportance, "{") })},
		{"importance of the wrong length", mutate(t, func(m *onnxpb.ModelProto) { setProp(m, MetaImportance, `[{"gain":1,"splits":1}]`) })},
		{"bad trained_at", mutate(t, func(m *onnxpb.ModelProto) {
			for _, p := range m.MetadataProps {
				if p.GetKey() == MetaTrainedAt {
					p.Value = proto.String("yesterday")
				}
			}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := UnmarshalONNX(tt.b)
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("UnmarshalONNX = %v, %v; want ErrInvalidModel", e, err)
			}
		})
	}
	if _, err := UnmarshalONNX(valid); err != nil {
		t.Fatalf("the unmutated model must decode: %v", err)
	}
	if e, err := UnmarshalONNX(mutateLink(t, LinkExp, func(*onnxpb.ModelProto) {})); err != nil || e.Link != LinkExp {
		t.Fatalf("the unmutated exp model must decode with its link: %v, %v", e, err)
	}
	// Files written before the link was recorded: the graph decides.
	noProp := func(m *onnxpb.ModelProto) {
		m.MetadataProps = slices.DeleteFunc(m.MetadataProps, func(p *onnxpb.StringStringEntryProto) bool { return p.GetKey() == MetaLink })
	}
	for _, link := range []string{LinkIdentity, LinkExp} {
		if e, err := UnmarshalONNX(mutateLink(t, link, noProp)); err != nil || e.Link != link {
			t.Fatalf("%s graph without metadata link: %v, %v", link, e, err)
		}
	}
}

// setProp sets (or adds) a metadata entry.
func setProp(m *onnxpb.ModelProto, k, v string) {
	for _, p := range m.MetadataProps {
		if p.GetKey() == k {
			p.Value = proto.String(v)
			return
		}
	}
	m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(k), Value: proto.String(v)})
}

func TestUnmarshalSurvivesByteFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	e := randomEnsemble(rng, 4, 3, 5)
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= byte(1 + rng.UintN(255))
		got, err := UnmarshalONNX(c)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("flip at %d: error %v does not wrap ErrInvalidModel", i, err)
			}
			continue
		}
		// Some flips hit a threshold or a weight: still a valid model.
		got.Predict(make([]float32, got.NumFeatures))
	}
}

func FuzzUnmarshalONNX(f *testing.F) {
	e := randomEnsemble(rand.New(rand.NewPCG(5, 5)), 2, 2, 3)
	b, err := e.MarshalONNX()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte("\x08\x08"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := UnmarshalONNX(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("error %v does not wrap ErrInvalidModel", err)
			}
			return
		}
		got.Predict(make([]float32, got.NumFeatures))
	})
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.onnx")
	e := randomEnsemble(rand.New(rand.NewPCG(9, 9)), 5, 4, 6)
	e.Meta = sampleMeta(6)
	if err := e.Save(path); err != nil {
		t.Fatal(err)
	}
	// Overwrite with a different model: the rename replaces the file.
	e.Base += 1
	if err := e.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Base != e.Base || !reflect.DeepEqual(got.Trees, e.Trees) {
		t.Fatalf("loaded model differs")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the model (temp files left behind?)", len(entries))
	}

	if err := e.Save(filepath.Join(dir, "missing", "model.onnx")); err == nil {
		t.Fatalf("Save into a missing directory succeeded")
	}
	if _, err := Load(filepath.Join(dir, "nope.onnx")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want ErrNotExist", err)
	}
	garbage := filepath.Join(dir, "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(garbage); !errors.Is(err, ErrInvalidModel) {
		t.Fatalf("Load(garbage) = %v, want ErrInvalidModel", err)
	}
}
