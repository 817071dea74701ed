package card

// Feeder turns a stream of samples into model input rows, causally: it keeps the last Window
// normalised samples and writes the row that ends at the newest one. It is the one place where
// a card's window and normalisation are applied, on the box and in evaluation alike.
//
// A Feeder allocates only in NewFeeder. It is not safe for concurrent use.
type Feeder struct {
	mean, inv []float64
	n, window int
	ring      []float32 // window × n normalised values, slot (k mod window) holds sample k
	seen      int       // samples pushed so far
}

// NewFeeder returns a Feeder for c.
func (c *Card) NewFeeder() *Feeder {
	n := len(c.Features)
	f := &Feeder{mean: c.Normalization.Mean, inv: make([]float64, n), n: n, window: c.Window,
		ring: make([]float32, n*c.Window)}
	for j, s := range c.Normalization.Std {
		f.inv[j] = 1 / s
	}
	return f
}

// Push adds one sample (len(sample) must be the card's feature count, in Features order).
func (f *Feeder) Push(sample []float64) {
	slot := f.ring[(f.seen%f.window)*f.n:][:f.n]
	for j, v := range sample[:f.n] {
		slot[j] = float32((v - f.mean[j]) * f.inv[j])
	}
	f.seen++
}

// Ready reports whether a whole window has been pushed.
func (f *Feeder) Ready() bool { return f.seen >= f.window }

// Row writes the input row ending at the newest sample into dst (len ≥ Inputs) and returns
// dst[:Inputs]. Before the window is full, the missing oldest samples are zeros (the mean).
func (f *Feeder) Row(dst []float32) []float32 {
	dst = dst[:f.n*f.window]
	for age := f.window - 1; age >= 0; age-- { // age 0 is the newest sample
		out := dst[(f.window-1-age)*f.n:][:f.n]
		k := f.seen - 1 - age
		if k < 0 {
			clear(out)
			continue
		}
		copy(out, f.ring[(k%f.window)*f.n:][:f.n])
	}
	return dst
}

func (f *Feeder) Reset() { f.seen = 0 }

// Carry makes f continue old's window: f takes old's samples, re-normalised from old's
// normalisation to f's, so that a model swapped in for another does not wait for a window of
// its own. It reports false, and leaves f as it was, when the two do not have the same number
// of features and the same window.
func (f *Feeder) Carry(old *Feeder) bool {
	if old.n != f.n || old.window != f.window {
		return false
	}
	for k, v := range old.ring {
		j := k % f.n
		x := float64(v)/old.inv[j] + old.mean[j] // the raw value
		f.ring[k] = float32((x - f.mean[j]) * f.inv[j])
	}
	f.seen = old.seen
	return true
}

// Alarm applies a card's Score rules to raw scores, one at a time: it smooths them, raises after
// Consecutive samples above Threshold and clears below Clear.
//
// An Alarm allocates only in NewAlarm. It is not safe for concurrent use.
type Alarm struct {
	s      Score
	recent []float64 // the last Smooth raw scores, as a ring
	sum    float64
	seen   int
	above  int
	active bool
}

// NewAlarm returns an Alarm for c's Score, not raised.
func (c *Card) NewAlarm() *Alarm {
	return &Alarm{s: c.Score, recent: make([]float64, c.Score.Smooth)}
}

// Step takes the next raw score and returns the smoothed score and the alarm state after it;
// changed reports whether the state flipped with this score.
func (a *Alarm) Step(raw float64) (smoothed float64, active, changed bool) {
	slot := a.seen % len(a.recent)
	if a.seen >= len(a.recent) {
		a.sum -= a.recent[slot]
	}
	a.recent[slot] = raw
	a.sum += raw
	a.seen++
	smoothed = a.sum / float64(min(a.seen, len(a.recent)))
	if a.seen%(1<<16) == 0 { // re-add from scratch now and then: no drift from float rounding
		a.sum = 0
		for _, v := range a.recent {
			a.sum += v
		}
	}
	if smoothed > a.s.Threshold {
		a.above++
	} else {
		a.above = 0
	}
	switch {
	case !a.active && a.above >= a.s.Consecutive:
		a.active, changed = true, true
	case a.active && smoothed < a.s.Clear:
		a.active, changed = false, true
	}
	return smoothed, a.active, changed
}

func (a *Alarm) Active() bool { return a.active }

// NewLikelihood returns the Likelihood of c's score section, or nil when it has none.
func (c *Card) NewLikelihood() *Likelihood {
	if c.Score.Likelihood == nil {
		return nil
	}
	l, err := NewLikelihood(*c.Score.Likelihood, len(c.Features))
	if err != nil {
		panic("card: NewLikelihood on a card that did not validate: " + err.Error())
	}
	return l
}
