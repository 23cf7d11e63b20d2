package dicom

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"sync"
)

// The procedure is Grand Challenge's own, taken unchanged from
// dist/procedure.json of DIAGNijmegen/rse-grand-challenge-dicom-de-id-procedure
// (Apache-2.0; see procedure/NOTICE). procedure/refresh.sh replaces it from a
// checkout of that repository.
//
//go:embed procedure/procedure.json
var procedureJSON []byte

// Action is what the procedure does with one attribute (or, as a SOP class's
// or the procedure's default, with the ones it does not list).
type Action byte

// The actions of the procedure (its README): the de-identifier Grand
// Challenge's clients use implements X, K, D, Z, U and R; C (clean) is in
// the schema but not implemented there, and a procedure using it is refused.
const (
	Remove  Action = 'X' // remove the attribute
	Keep    Action = 'K' // keep it; the items of a sequence are cleaned
	Dummy   Action = 'D' // replace with a dummy value of the VR
	Empty   Action = 'Z' // replace with an empty value (a dummy for VRs that cannot be empty)
	NewUID  Action = 'U' // replace with a UID consistent across the files
	Reject  Action = 'R' // reject the whole file
	cleanUp Action = 'C'
)

// String is the action's letter in the procedure.
func (a Action) String() string { return string(rune(a)) }

// Rule is the action for one attribute with the procedure's reason for it.
type Rule struct {
	Action        Action
	Justification string
}

// SOPClassRules is the procedure for one SOP class: a rule per tag and a
// default for the tags it does not list.
type SOPClassRules struct {
	Default Rule
	Tags    map[Tag]Rule
	// Masked holds rules for repeating groups written with XX, such as
	// (60XX,0010): the key is the tag with the group's low byte cleared.
	Masked map[Tag]Rule
}

// Rule returns the rule for tag t.
func (c *SOPClassRules) Rule(t Tag) Rule {
	if r, ok := c.Tags[t]; ok {
		return r
	}
	if r, ok := c.Masked[t&0xFF00FFFF]; ok {
		return r
	}
	return c.Default
}

// Procedure is a parsed de-identification procedure.
type Procedure struct {
	// Version is the procedure's release, written into
	// DeidentificationMethod (0012,0063).
	Version string
	// Default applies to a SOP class the procedure does not list.
	Default  Rule
	SOPClass map[string]*SOPClassRules
}

// Accepts reports whether files of this SOP class are de-identified rather
// than rejected.
func (p *Procedure) Accepts(sopClass string) bool {
	if _, ok := p.SOPClass[sopClass]; ok {
		return true
	}
	return p.Default.Action == Keep
}

// SOPClasses lists the SOP classes the procedure has rules for.
func (p *Procedure) SOPClasses() []string {
	var out []string
	for k := range p.SOPClass {
		out = append(out, k)
	}
	return out
}

var defaultProcedure = sync.OnceValues(func() (*Procedure, error) {
	return ParseProcedure(procedureJSON)
})

// DefaultProcedure returns the embedded Grand Challenge procedure. The
// result is shared: do not modify it.
func DefaultProcedure() (*Procedure, error) { return defaultProcedure() }

type jsonRule struct {
	Default       string           `json:"default"`
	Justification string           `json:"justification"`
	Tag           map[string]jRule `json:"tag"`
}

type jRule struct {
	Default       string `json:"default"`
	Justification string `json:"justification"`
}

var tagKey = regexp.MustCompile(`^\(([0-9A-F]{2})([0-9A-FX]{2}),([0-9A-F]{4})\)$`)

// ParseProcedure parses a procedure in the format of the procedure
// repository's dist/procedure.json (its schemas/procedure.json).
func ParseProcedure(b []byte) (*Procedure, error) {
	var j struct {
		Version       string              `json:"version"`
		Default       string              `json:"default"`
		Justification string              `json:"justification"`
		SOPClass      map[string]jsonRule `json:"sopClass"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parse de-identification procedure: %w", err)
	}
	p := &Procedure{Version: j.Version, SOPClass: map[string]*SOPClassRules{}}
	if p.Version == "" {
		p.Version = "unknown"
	}
	var err error
	// As Grand Challenge's de-identifier: no default means reject.
	if p.Default, err = parseRule(j.Default, j.Justification, Reject, "procedure default"); err != nil {
		return nil, err
	}
	if p.Default.Action != Reject && p.Default.Action != Keep {
		return nil, fmt.Errorf("parse de-identification procedure: default action %s for unlisted SOP classes (only R or K)", p.Default.Action)
	}
	for uid, c := range j.SOPClass {
		rules := &SOPClassRules{Tags: map[Tag]Rule{}, Masked: map[Tag]Rule{}}
		if rules.Default, err = parseRule(c.Default, c.Justification, Remove, "default of SOP class "+uid); err != nil {
			return nil, err
		}
		for k, r := range c.Tag {
			m := tagKey.FindStringSubmatch(k)
			if m == nil {
				return nil, fmt.Errorf("parse de-identification procedure: SOP class %s: invalid tag %q", uid, k)
			}
			rule, err := parseRule(r.Default, r.Justification, 0, "tag "+k)
			if err != nil {
				return nil, err
			}
			hi, _ := strconv.ParseUint(m[1], 16, 8)
			el, _ := strconv.ParseUint(m[3], 16, 16)
			if m[2] == "XX" {
				rules.Masked[Tag(hi<<24|el)] = rule
				continue
			}
			lo, err := strconv.ParseUint(m[2], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("parse de-identification procedure: SOP class %s: invalid tag %q", uid, k)
			}
			rules.Tags[Tag(hi<<24|lo<<16|el)] = rule
		}
		p.SOPClass[uid] = rules
	}
	return p, nil
}

func parseRule(action, justification string, def Action, where string) (Rule, error) {
	if action == "" {
		if def == 0 {
			return Rule{}, fmt.Errorf("parse de-identification procedure: %s has no action", where)
		}
		return Rule{Action: def, Justification: justification}, nil
	}
	if len(action) != 1 {
		return Rule{}, fmt.Errorf("parse de-identification procedure: %s: unknown action %q", where, action)
	}
	a := Action(action[0])
	switch a {
	case Remove, Keep, Dummy, Empty, NewUID, Reject:
	case cleanUp:
		return Rule{}, fmt.Errorf("parse de-identification procedure: %s: action C (clean) is not implemented, as in Grand Challenge's de-identifier", where)
	default:
		return Rule{}, fmt.Errorf("parse de-identification procedure: %s: unknown action %q", where, action)
	}
	return Rule{Action: a, Justification: justification}, nil
}
