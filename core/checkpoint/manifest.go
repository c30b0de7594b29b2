package checkpoint

import (
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// manifest is manifest.json: the format version and checksums of every file,
// verified on load. Safetensors files are checksummed per tensor so a reader
// streaming one tensor at a time can verify each as it goes, without a
// separate pass over gigabytes. CRC-32 (IEEE, as zlib computes it) catches
// storage and copy corruption, which is the threat here; it is not a
// defence against deliberate tampering.
type manifest struct {
	Format        string                     `json:"format"`
	FormatVersion int                        `json:"format_version"`
	Files         map[string]fileSum         `json:"files"`
	Safetensors   map[string]safetensorsSums `json:"safetensors"`
}

const manifestFormat = "mypt-checkpoint"

type fileSum struct {
	Size  int64  `json:"size"`
	CRC32 uint32 `json:"crc32"`
}

type safetensorsSums struct {
	Size        int64             `json:"size"`
	HeaderCRC32 uint32            `json:"header_crc32"` // of the 8-byte length and the JSON header
	Tensors     map[string]uint32 `json:"tensor_crc32"` // of each tensor's stored bytes
}

func sumBytes(b []byte) fileSum {
	return fileSum{Size: int64(len(b)), CRC32: crc32.ChecksumIEEE(b)}
}

// readVerified reads a small file of the checkpoint and checks it against
// the manifest.
func (m *manifest) readVerified(dir, name string) ([]byte, error) {
	want, ok := m.Files[name]
	if !ok {
		return nil, fmt.Errorf("%s is not listed in %s", name, ManifestFile)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if got := sumBytes(b); got != want {
		return nil, fmt.Errorf("%s is corrupt: %d bytes with CRC-32 %08x, manifest says %d bytes with %08x",
			name, got.Size, got.CRC32, want.Size, want.CRC32)
	}
	return b, nil
}

func readManifest(dir string) (*manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("read %s (not a complete mypt checkpoint?): %w", ManifestFile, err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", ManifestFile, err)
	}
	if m.Format != manifestFormat {
		return nil, fmt.Errorf("%s: format is %q, want %q", ManifestFile, m.Format, manifestFormat)
	}
	if m.FormatVersion < 1 || m.FormatVersion > FormatVersion {
		return nil, fmt.Errorf("%s: format_version %d is not supported (this build reads up to %d)", ManifestFile, m.FormatVersion, FormatVersion)
	}
	return &m, nil
}
