package test

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// readBandwidthGBs measures this machine's memory read bandwidth: one reader per CPU, each summing 512 MiB, the
// best of three.
func readBandwidthGBs() float64 {
	n := runtime.NumCPU()
	const words = 64 << 20
	bufs := make([][]uint64, n)
	for i := range bufs {
		bufs[i] = make([]uint64, words)
		for j := range bufs[i] {
			bufs[i][j] = uint64(j)
		}
	}
	best := 0.0
	for range 3 {
		var wg sync.WaitGroup
		sums := make([]uint64, n)
		start := time.Now()
		for i := range bufs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var s uint64
				b := bufs[i]
				for k := 0; k+3 < len(b); k += 4 {
					s += b[k] + b[k+1] + b[k+2] + b[k+3]
				}
				sums[i] = s
			}()
		}
		wg.Wait()
		best = max(best, float64(n*words*8)/time.Since(start).Seconds()/1e9)
	}
	return best
}

// BenchmarkMemoryBandwidth is this machine's read bandwidth, behind the CPU figure of catalog/data/hardware.json.
func BenchmarkMemoryBandwidth(b *testing.B) {
	var gbs float64
	for b.Loop() {
		gbs = readBandwidthGBs()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(gbs/float64(runtime.NumCPU()), "GB/s/vCPU")
}
