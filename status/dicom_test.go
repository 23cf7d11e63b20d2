package status

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteTableShowsDICOMListeners(t *testing.T) {
	r := &Report{Counts: map[string]int{}, DICOM: []Listener{{
		Listen: "0.0.0.0:11112", AETitle: "GCINGEST", TLS: true,
		ListenerCounts: ListenerCounts{Current: 1, Total: 3, Refused: 1, Instances: 50, Bytes: 50 << 20},
		Callers: map[string]ListenerCounts{
			"CT1":      {Total: 3, Instances: 50, Bytes: 50 << 20},
			"INTRUDER": {Refused: 1},
		},
	}}}
	var b bytes.Buffer
	if err := r.WriteTable(&b, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := "dicom GCINGEST on 0.0.0.0:11112, TLS: 1 association now, 3 since start, 1 refused; 50 instances, 50.0 MiB received (CT1 50, INTRUDER refused 1)"
	if !strings.Contains(b.String(), want) {
		t.Errorf("got\n%s\nwant a line\n%s", b.String(), want)
	}
}

func TestDICOMMetricsEscapeTheCallersText(t *testing.T) {
	var b bytes.Buffer
	writeDICOMMetrics(&b, []Listener{{Listen: ":11112", AETitle: "GC", Callers: map[string]ListenerCounts{"A\"B\x01\u00e9": {Refused: 2}}}})
	want := `gcingest_dicom_caller_associations_refused_total{listen=":11112",calling_ae="A\"B???"} 2`
	if !strings.Contains(b.String(), want) {
		t.Errorf("got\n%s\nwant a line\n%s", b.String(), want)
	}
}
