package model

import (
	"fmt"
	"os"
	"path/filepath"
)

// Load reads and validates an ONNX model file.
func Load(path string) (*Ensemble, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	e, err := UnmarshalONNX(b)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return e, nil
}

// Save writes the ensemble as ONNX to path atomically: it writes a temporary
// file in the same directory, syncs it and renames it over path, so readers
// see either the old or the new model, never a partial one.
func (e *Ensemble) Save(path string) error {
	b, err := e.MarshalONNX()
	if err != nil {
		return fmt.Errorf("save model %s: %w", path, err)
	}
	if err := writeFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path through a synced temporary file in the
// same directory and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	// Persist the rename; failure here does not undo a completed write.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
