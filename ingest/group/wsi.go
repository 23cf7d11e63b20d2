package group

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Whole-slide formats that keep companion files:
//   - .vms/.vmu (Hamamatsu): an INI file naming its image, map and
//     optimisation files in the same folder.
//   - .mrxs (3DHISTECH): a file plus a same-named sibling folder holding
//     Slidedat.ini and the data files Slidedat.ini lists.

// maxINISize bounds how much of an INI file is read.
const maxINISize = 1 << 20

// parseVMS returns the companion file names a .vms/.vmu file lists
// (ImageFile, ImageFile(x,y), MapFile, OptimisationFile, MacroImage), and an
// error naming an entry that points outside the folder.
func parseVMS(r io.Reader) ([]string, error) {
	var names []string
	err := scanINI(r, func(section, key, value string) error {
		k := strings.ToLower(key)
		if !strings.HasPrefix(k, "imagefile") && k != "mapfile" && k != "optimisationfile" && k != "macroimage" {
			return nil
		}
		if value == "" {
			return nil
		}
		if value == "." || value == ".." || strings.ContainsAny(value, `/\`) {
			return fmt.Errorf("%s = %q is not a file in the same folder", key, value)
		}
		names = append(names, value)
		return nil
	})
	return names, err
}

// parseSlidedat returns the data files the [DATAFILE] section of an MRXS
// Slidedat.ini lists (FILE_0 = Data0000.dat, …).
func parseSlidedat(r io.Reader) ([]string, error) {
	var names []string
	err := scanINI(r, func(section, key, value string) error {
		if !strings.EqualFold(section, "DATAFILE") || !isFileN(key) || value == "" {
			return nil
		}
		if value == "." || value == ".." || strings.ContainsAny(value, `/\`) {
			return fmt.Errorf("%s = %q is not a file in the slide folder", key, value)
		}
		names = append(names, value)
		return nil
	})
	return names, err
}

// scanINI calls fn for each key = value line, with its [section].
func scanINI(r io.Reader, fn func(section, key, value string) error) error {
	sc := bufio.NewScanner(io.LimitReader(r, maxINISize))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	section := ""
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if first {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == ';' || line[0] == '#' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if err := fn(section, strings.TrimSpace(key), strings.TrimSpace(value)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read INI: %w", err)
	}
	return nil
}

// isFileN reports a FILE_<n> key (not FILE_COUNT).
func isFileN(key string) bool {
	n, ok := strings.CutPrefix(strings.ToUpper(key), "FILE_")
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
