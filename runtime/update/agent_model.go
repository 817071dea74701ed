package update

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/perch-edge/perch/models/card"
	"github.com/perch-edge/perch/registry/trust"
	"github.com/perch-edge/perch/runtime"
	"github.com/perch-edge/perch/runtime/config"
	"github.com/perch-edge/perch/runtime/store"
	"github.com/perch-edge/perch/runtime/update/boot"
)

// runningModel is the card a model node runs now: what a rollback restores.
type runningModel struct {
	card    string // the card's path (NAME.card.yaml, its .onnx beside it)
	model   string // the hex SHA-256 of its .onnx file (the card's sha256)
	version string
	target  string
	release uint64
}

// runningModels returns what each model of cfg runs: the card its config names (ApplyInstalled
// has already put the installed ones there), with the target and release that installed it.
func runningModels(cfg *config.Config, installed []store.Installed) map[string]runningModel {
	out := map[string]runningModel{}
	for i := range cfg.Models {
		m := &cfg.Models[i]
		r := runningModel{card: m.Card}
		if m.Loaded != nil {
			r.version, r.model = m.Loaded.Version, m.Loaded.SHA256
		}
		for _, in := range installed {
			if in.Kind == trust.KindModel && in.Name == m.Name && in.Path == m.Card {
				r.target, r.release = in.Target, in.Release
			}
		}
		out[m.Name] = r
	}
	return out
}

// updateModel brings the model node named model to target's release, if it is newer than what
// it runs: the artifact's two layers (the .onnx file and its card) are fetched and verified
// against the TUF target, the .onnx against the card's digest; they are staged side by side
// as NAME.onnx and NAME.card.yaml, swapped in between two batches of the node
// ([runtime.Runtime.SwapModel]), watched for the health window, and committed (the installed
// table names the staged card) or rolled back to the card it ran before. After the commit, the
// superseded blobs and staged folders in the model's download folder are removed (collect);
// a removal a power cut interrupted is finished at the next poll.
func (a *Agent) updateModel(ctx context.Context, model, target string) error {
	cur, ok := a.models[model]
	if !ok {
		return fmt.Errorf("update: the deployment names model %q, which this box's config does not have", model)
	}
	c, info, err := a.trust.Target(target)
	if err != nil {
		return err
	}
	u := a.attempt(model, target, c)
	dir := filepath.Join(a.cfg.Dir, "models", model)
	if c.Release <= cur.release && cur.target == target {
		// Up to date; finish a collect that a power cut interrupted.
		if keep := modelKeep(dir, cur.card, cur.model); keep != nil {
			a.collectIfStale(ctx, u.step, dir, cur.release, keep...)
		}
		return nil
	}
	var installed uint64
	if cur.target == target {
		installed = cur.release
	}
	files, _, skip, err := u.download(ctx, trust.KindModel, installed, info, dir)
	if skip || err != nil {
		return err
	}
	cardPath, cardData, cd, err := a.stageModel(files)
	if err != nil {
		return u.fail(ctx, err)
	}
	u.to(ctx, StepStaged, "")
	rep, err := a.rt.SwapModel(ctx, model, cardPath)
	if err != nil {
		return u.fail(ctx, err)
	}
	swappedAt := time.Now()
	u.to(ctx, StepSwapped, fmt.Sprintf("%s -> %s, load %v, gap %v, %d streams carried, %d warming",
		rep.OldVersion, rep.NewVersion, rep.Load, rep.Gap, rep.Carried, rep.Warming))
	if err := u.settle(ctx, swappedAt, cur.version, func(ctx context.Context) error {
		_, err := a.rt.SwapModel(ctx, model, cur.card)
		return err
	}); err != nil {
		return err
	}
	sum := sha256.Sum256(cardData)
	if err := a.st.Install(ctx, store.Installed{Target: target, Kind: c.Kind, Name: model, Version: c.Version, Release: c.Release,
		Digest: c.Digest, Path: cardPath, SHA256: hex.EncodeToString(sum[:]), Manifest: string(cardData)},
		fmt.Sprintf("healthy for %v", a.cfg.HealthWindow)); err != nil {
		return u.fail(ctx, err)
	}
	a.models[model] = runningModel{card: cardPath, model: cd.SHA256, version: cd.Version, target: target, release: c.Release}
	u.committed(ctx)
	// Only now, with the installed row on disk, may the superseded models go.
	a.collect(ctx, u.step, dir, modelKeep(dir, cardPath, cd.SHA256)...)
	return nil
}

// modelKeep returns the names in dir, a model's download folder, that the model whose card is
// at cardPath (in its staged folder in dir) uses: the .onnx blob (named by onnxSHA, its hex
// SHA-256), the card's blob and the staged folder. It returns nil when the card is not in a
// staged folder of dir (the config's own card): then nothing of dir is known to be in use, and
// nothing is collected.
func modelKeep(dir, cardPath, onnxSHA string) []string {
	staged := filepath.Dir(cardPath)
	blob, ok := strings.CutSuffix(filepath.Base(staged), stagedSuffix)
	if !ok || filepath.Clean(filepath.Dir(staged)) != filepath.Clean(dir) || onnxSHA == "" {
		return nil
	}
	return []string{onnxSHA, blob, blob + stagedSuffix}
}

// stagedSuffix names a model's staged folder: the card blob's name and this.
const stagedSuffix = ".staged"

// stageModel checks a model artifact's layers (the .onnx file, then its card: a card that
// does not parse, or whose digest is not the .onnx file's, is refused) and writes them side by
// side into a folder of their own, as the card names them, each durably (written, synced,
// renamed, the folder synced). It returns the staged card's path, its bytes and the card.
func (a *Agent) stageModel(files []string) (string, []byte, *card.Card, error) {
	if len(files) != 2 {
		return "", nil, nil, fmt.Errorf("a model artifact has 2 layers (NAME.onnx, NAME.card.yaml), this one %d", len(files))
	}
	fsys := a.fs()
	onnx, err := readBlob(fsys, files[0])
	if err != nil {
		return "", nil, nil, err
	}
	data, err := readBlob(fsys, files[1])
	if err != nil {
		return "", nil, nil, err
	}
	cd, err := card.Parse(data)
	if err != nil {
		return "", nil, nil, fmt.Errorf("the artifact's card: %w", err)
	}
	if got := card.Digest(onnx); got != cd.SHA256 {
		return "", nil, nil, fmt.Errorf("the artifact's model has sha256 %s, its card says %s: %w", got, cd.SHA256, ErrDigest)
	}
	// One folder per card: the card pins the model, so the folder's content never changes.
	dir := filepath.ToSlash(files[1]) + stagedSuffix
	if err := boot.MkdirAll(fsys, dir, 0o755); err != nil {
		return "", nil, nil, err
	}
	cardPath := dir + "/" + cd.Name + card.Suffix
	if err := writeDurable(fsys, dir, cd.Model, onnx); err != nil {
		return "", nil, nil, err
	}
	if err := writeDurable(fsys, dir, cd.Name+card.Suffix, data); err != nil {
		return "", nil, nil, err
	}
	return filepath.FromSlash(cardPath), data, cd, nil
}

// writeDurable writes data as dir/name through a temporary file: written, synced, renamed,
// and dir synced, so that after a power cut dir/name is whole or missing.
func writeDurable(fsys boot.FS, dir, name string, data []byte) error {
	tmp := dir + "/" + name + PartialSuffix
	f, err := fsys.Create(tmp, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, dir+"/"+name)
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("update: stage %s/%s: %w", dir, name, err)
	}
	return nil
}

// loadCard is [card.Load] on fsys: it reads and parses the card at path and checks the
// SHA-256 of the model file beside it against the card's.
func loadCard(fsys boot.FS, path string) (*card.Card, error) {
	data, err := readFile(fsys, path)
	if err != nil {
		return nil, fmt.Errorf("model card: %w", err)
	}
	c, err := card.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("model card %s: %w", path, err)
	}
	model, err := readFile(fsys, c.ModelPath(path))
	if err != nil {
		return nil, fmt.Errorf("model card %s: model: %w", path, err)
	}
	if got := card.Digest(model); got != c.SHA256 {
		return nil, fmt.Errorf("model card %s: model %s has sha256 %s, the card says %s: %w", path, c.Model, got, c.SHA256, ErrDigest)
	}
	return c, nil
}

// applyInstalledModels points the models of cfg at the cards the agent installed and committed,
// once each card is re-verified by its SHA-256 and loaded from fsys (loadCard: its model's
// digest is checked), and its features fit the model's fields map: one that fails is skipped
// with a warning and the config's own card runs.
func applyInstalledModels(cfg *config.Config, db *sql.DB, fsys boot.FS, log *slog.Logger) error {
	rows, err := db.Query(`SELECT name, path, sha256, version FROM installed WHERE kind = 'model'`)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a recorder from before migration 3
		}
		return fmt.Errorf("update: installed models: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, path, sum, version string
		if err := rows.Scan(&name, &path, &sum, &version); err != nil {
			return fmt.Errorf("update: installed models: %w", err)
		}
		m := cfg.Model(name)
		if m == nil {
			continue
		}
		if err := verifyFileSHA(fsys, path, sum); err != nil {
			log.Warn("update: an installed model card does not verify; running the config's", "model", name, "err", err)
			continue
		}
		c, err := loadCard(fsys, path)
		if err != nil {
			log.Warn("update: an installed model does not load; running the config's", "model", name, "err", err)
			continue
		}
		nm := *m
		nm.Card, nm.Loaded = path, c
		fields, err := runtime.ModelFields(&nm, c)
		if err != nil {
			log.Warn("update: an installed model no longer fits its config; running the config's", "model", name, "err", err)
			continue
		}
		m.Card, m.Loaded, m.FieldNames = path, c, fields
	}
	return rows.Err()
}
