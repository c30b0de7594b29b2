package train

import (
	"fmt"
	"slices"

	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/model"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// ComputeDType resolves the config's precision ("auto", "fp32", "bf16") against what the
// backend declares. auto follows MyPT, which autocasts to bf16 on CUDA and trains in fp32 on
// the CPU: bf16 when the backend declares BF16 compute and runs on a device that is not a
// CPU, fp32 otherwise. info is the backend's GetInfo. mypt train and mypt bench both resolve
// it here.
func ComputeDType(info *pb.GetInfoResponse, precision string) (pb.DType, error) {
	if precision == "fp32" || precision == "" {
		return pb.DType_DTYPE_F32, nil
	}
	hasBF16 := slices.Contains(info.GetCapabilities().GetComputeDtypes(), pb.DType_DTYPE_BF16)
	switch precision {
	case "bf16":
		if !hasBF16 {
			return 0, fmt.Errorf("precision bf16: backend %s does not declare BF16 compute (it declares %v); use precision fp32 or auto",
				info.GetName(), info.GetCapabilities().GetComputeDtypes())
		}
		return pb.DType_DTYPE_BF16, nil
	case "auto":
		accelerator := slices.ContainsFunc(info.GetDevices(), func(d *pb.Device) bool { return d.GetKind() != "cpu" })
		if hasBF16 && accelerator {
			return pb.DType_DTYPE_BF16, nil
		}
		return pb.DType_DTYPE_F32, nil
	}
	return 0, fmt.Errorf("precision %q: want auto, fp32 or bf16", precision)
}

// CheckFreezing refuses a config that freezes parameters (freeze_layers, freeze_embeddings)
// when the backend does not declare FEATURE_FROZEN_PARAMS, rather than letting Configure
// fail with the backend's UNIMPLEMENTED. info is the backend's GetInfo.
func CheckFreezing(info *pb.GetInfoResponse, cfg config.Config) error {
	if cfg.FreezeLayers == 0 && !cfg.FreezeEmbeddings {
		return nil
	}
	if !slices.Contains(info.GetCapabilities().GetFeatures(), pb.Feature_FEATURE_FROZEN_PARAMS) {
		return fmt.Errorf("freeze_layers %d / freeze_embeddings %v: backend %s does not support frozen parameters (it does not declare FEATURE_FROZEN_PARAMS); use another backend or drop the freeze keys",
			cfg.FreezeLayers, cfg.FreezeEmbeddings, info.GetName())
	}
	return nil
}

// ConfigureRequest is the Configure call a run makes: the model with the config's frozen
// tensors marked (freeze_layers, freeze_embeddings), AdamW's betas and eps, fp32 master
// weights with the resolved compute dtype, the seed and the largest batch shape.
func ConfigureRequest(cfg config.Config, spec model.Spec, compute pb.DType) *pb.ConfigureRequest {
	return &pb.ConfigureRequest{
		Model:        spec.Freeze(cfg.FreezeLayers, cfg.FreezeEmbeddings).Proto(),
		Optimizer:    &pb.OptimizerSpec{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.AdamEps},
		Precision:    &pb.Precision{ParamDtype: pb.DType_DTYPE_F32, ComputeDtype: compute},
		Seed:         uint64(cfg.Seed),
		MaxBatchSize: uint32(cfg.BatchSize),
		MaxSeqLen:    uint32(cfg.BlockSize),
	}
}
