// Package bytesize writes byte counts as people read them: "329 B",
// "1.2 KiB", "3.4 MiB", in binary units.
package bytesize

import "fmt"

// Format returns n with one decimal in the largest binary unit it fills:
// "1023 B", "1.0 KiB", "5.0 GiB".
func Format(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
