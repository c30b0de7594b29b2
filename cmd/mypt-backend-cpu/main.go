// Command mypt-backend-cpu is the pure-Go CPU backend plugin; the mypt core starts it.
package main

import (
	"github.com/mypt/mypt/backends/cpu"
	"github.com/mypt/mypt/sdk"
)

func main() { sdk.Serve(cpu.New(cpu.Options{})) }
