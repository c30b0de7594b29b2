package sdk

import (
	"os/exec"
	"syscall"
)

// bindToParent makes the kernel kill the plugin if the host dies, even by
// SIGKILL, so a killed trainer never leaves an orphaned plugin computing.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
