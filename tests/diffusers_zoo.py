"""Tiny random-initialised configs of every autoencoder class the installed diffusers exports, with
an input shape each takes (for tests/test_diffusers_zoo.py and benchmarks). Channel widths of 32
where a class fixes 32 normalisation groups; 8 elsewhere."""

from __future__ import annotations

IMAGE, IMAGE_T, VIDEO, AUDIO = (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 3, 4, 4), (1, 1, 32)
BLOCKS2 = {"down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2}
TWO = (8, 8)

TINY: dict[str, tuple[dict, tuple[int, ...]]] = {
    "AutoencoderKL": ({**BLOCKS2, "block_out_channels": TWO, "norm_num_groups": 4, "latent_channels": 2}, IMAGE),
    "AsymmetricAutoencoderKL": (
        {"down_block_types": ("DownEncoderBlock2D",) * 2, "down_block_out_channels": TWO,
         "up_block_types": ("UpDecoderBlock2D",) * 2, "up_block_out_channels": TWO, "norm_num_groups": 4,
         "latent_channels": 2}, IMAGE),
    "AutoencoderTiny": (
        {"encoder_block_out_channels": TWO, "decoder_block_out_channels": TWO, "num_encoder_blocks": (1, 1),
         "num_decoder_blocks": (1, 1), "latent_channels": 2}, IMAGE),
    "VQModel": ({**BLOCKS2, "block_out_channels": TWO, "norm_num_groups": 4, "latent_channels": 2,
                 "num_vq_embeddings": 16}, IMAGE),
    "AutoencoderKLTemporalDecoder": (
        {"block_out_channels": (32, 32), "down_block_types": ("DownEncoderBlock2D",) * 2, "latent_channels": 2},
        (1, 3, 8, 8)),
    "AutoencoderKLFlux2": ({**BLOCKS2, "block_out_channels": TWO, "norm_num_groups": 4, "latent_channels": 2,
                           "layers_per_block": 1}, IMAGE),
    "AutoencoderDC": (
        {"latent_channels": 2, "attention_head_dim": 4, "encoder_block_types": ("ResBlock", "EfficientViTBlock"),
         "decoder_block_types": ("ResBlock", "EfficientViTBlock"), "encoder_block_out_channels": TWO,
         "decoder_block_out_channels": TWO, "encoder_layers_per_block": (1, 1), "decoder_layers_per_block": (1, 1),
         "encoder_qkv_multiscales": ((), (5,)), "decoder_qkv_multiscales": ((), (5,))}, IMAGE),
    "ConsistencyDecoderVAE": (
        {"latent_channels": 4, "encoder_block_out_channels": TWO,
         "encoder_down_block_types": ("DownEncoderBlock2D",) * 2, "encoder_layers_per_block": 1,
         "encoder_norm_num_groups": 4, "encoder_out_channels": 4,
         "decoder_block_out_channels": TWO, "decoder_down_block_types": ("ResnetDownsampleBlock2D",) * 2,
         "decoder_up_block_types": ("ResnetUpsampleBlock2D",) * 2, "decoder_layers_per_block": 1,
         "decoder_norm_num_groups": 4}, (1, 3, 8, 8)),
    "AutoencoderKLHunyuanImage": (
        {"in_channels": 3, "out_channels": 3, "latent_channels": 2, "block_out_channels": (32, 32),
         "layers_per_block": 1, "spatial_compression_ratio": 2, "sample_size": 8}, (1, 3, 8, 8)),
    "AutoencoderKLKVAE": ({"channels": 32, "num_enc_blocks": 1, "num_dec_blocks": 1, "z_channels": 2,
                           "ch_mult": (1, 1)}, (1, 3, 8, 8)),
    "AutoencoderKLQwenImage": ({"base_dim": 8, "z_dim": 2, "dim_mult": [1, 1], "num_res_blocks": 1,
                                "temperal_downsample": [False], "latents_mean": [0.1, -0.2],
                                "latents_std": [2.0, 0.5]}, IMAGE_T),
    "AutoencoderKLQwenImage21": (
        {"base_dim": 8, "decoder_base_dim": 8, "z_dim": 2, "dim_mult": [1, 1], "num_res_blocks": 1,
         "temperal_downsample": [False], "latents_mean": [0.0] * 2, "latents_std": [1.0] * 2}, (1, 4, 8, 8)),
    "AutoencoderKLWan": (
        {"base_dim": 8, "z_dim": 2, "dim_mult": [1, 1], "num_res_blocks": 1, "temperal_downsample": [True],
         "latents_mean": [0.0] * 2, "latents_std": [1.0] * 2}, (1, 3, 5, 4, 4)),
    "AutoencoderKLHunyuanVideo": (
        {"latent_channels": 2, "block_out_channels": (32, 32, 32), "down_block_types": ("HunyuanVideoDownBlock3D",) * 3,
         "up_block_types": ("HunyuanVideoUpBlock3D",) * 3, "layers_per_block": 1, "norm_num_groups": 8,
         "spatial_compression_ratio": 4, "temporal_compression_ratio": 4}, (1, 3, 5, 4, 4)),
    "AutoencoderKLHunyuanVideo15": ({"latent_channels": 2, "block_out_channels": TWO, "layers_per_block": 1,
                                     "spatial_compression_ratio": 2, "temporal_compression_ratio": 2}, VIDEO),
    "AutoencoderKLHunyuanImageRefiner": ({"latent_channels": 2, "block_out_channels": TWO, "layers_per_block": 1,
                                          "spatial_compression_ratio": 2, "temporal_compression_ratio": 2}, VIDEO),
    "AutoencoderKLCogVideoX": (
        {"block_out_channels": TWO, "down_block_types": ("CogVideoXDownBlock3D",) * 2,
         "up_block_types": ("CogVideoXUpBlock3D",) * 2, "latent_channels": 2, "layers_per_block": 1,
         "norm_num_groups": 4, "temporal_compression_ratio": 2}, VIDEO),
    "AutoencoderKLLTXVideo": (
        {"latent_channels": 2, "block_out_channels": TWO, "decoder_block_out_channels": TWO,
         "layers_per_block": (1, 1, 1), "decoder_layers_per_block": (1, 1, 1), "spatio_temporal_scaling": (True, False),
         "decoder_spatio_temporal_scaling": (True, False), "decoder_inject_noise": (False, False, False),
         "upsample_residual": (False, False), "upsample_factor": (1, 1), "patch_size": 1,
         "down_block_types": ("LTXVideoDownBlock3D",) * 2, "downsample_type": ("conv", "conv")}, VIDEO),
    "AutoencoderKLLTX2Video": (
        {"latent_channels": 2, "block_out_channels": TWO, "decoder_block_out_channels": (8,),
         "layers_per_block": (1, 1, 1), "decoder_layers_per_block": (1, 1), "spatio_temporal_scaling": (True, False),
         "decoder_spatio_temporal_scaling": (True,), "decoder_inject_noise": (False, False),
         "downsample_type": ("spatial", "temporal"), "upsample_type": ("spatiotemporal",),
         "upsample_residual": (False,), "upsample_factor": (1,), "patch_size": 1,
         "down_block_types": ("LTX2VideoDownBlock3D",) * 2}, VIDEO),
    "AutoencoderKLMochi": (
        {"encoder_block_out_channels": (32, 32), "decoder_block_out_channels": (32, 32), "latent_channels": 2,
         "layers_per_block": (1, 1, 1), "temporal_expansions": (1,), "spatial_expansions": (2,),
         "add_attention_block": (False, False, False), "latents_mean": (0.0,) * 2, "latents_std": (1.0,) * 2},
        (1, 3, 3, 4, 4)),
    "AutoencoderKLAllegro": (
        {"block_out_channels": (32, 32), "down_block_types": ("AllegroDownBlock3D",) * 2,
         "up_block_types": ("AllegroUpBlock3D",) * 2, "temporal_downsample_blocks": (True, False),
         "temporal_upsample_blocks": (False, True), "latent_channels": 2, "layers_per_block": 1,
         "temporal_compression_ratio": 2, "sample_size": 8}, (1, 3, 2, 4, 4)),
    "AutoencoderKLMagvit": (
        {"latent_channels": 2, "block_out_channels": [8, 8],
         "down_block_types": ["SpatialDownBlock3D", "SpatialTemporalDownBlock3D"],
         "up_block_types": ["SpatialUpBlock3D", "SpatialTemporalUpBlock3D"], "layers_per_block": 1,
         "norm_num_groups": 4}, VIDEO),
    "AutoencoderKLCosmos": (
        {"latent_channels": 2, "encoder_block_out_channels": TWO, "decode_block_out_channels": TWO,
         "attention_resolutions": (), "resolution": 16, "num_layers": 1, "patch_size": 1,
         "spatial_compression_ratio": 2, "temporal_compression_ratio": 2, "latents_mean": None,
         "latents_std": None}, VIDEO),
    "AutoencoderKLKVAEVideo": ({"ch": 32, "ch_mult": (1, 1), "num_res_blocks": 1, "z_channels": 2,
                                "temporal_compress_times": 2}, (1, 3, 3, 4, 4)),
    "AutoencoderKLMiniMaxH3": (
        {"latent_channels": 2, "block_out_channels": TWO, "layers_per_block": 1, "spatial_downsample_factors": (2, 1),
         "temporal_downsample_factors": (2, 1), "norm_num_groups": 4, "decoder_num_layers": 1,
         "decoder_num_attention_heads": 2, "decoder_attention_head_dim": 8, "decoder_num_register_tokens": 1,
         "decoder_ffn_mult": 1, "latents_mean": (0.0,) * 2, "latents_std": (1.0,) * 2}, VIDEO),
    "AutoencoderVidTok": ({"ch": 8, "ch_mult": [1, 1], "z_channels": 2, "num_res_blocks": 1}, (1, 3, 5, 4, 4)),
    "Kandinsky6SRVAE": (
        {"latent_channels": 2, "encoder_block_out_channels": TWO, "decoder_block_out_channels": TWO,
         "layers_per_block": 1, "temporal_compression_ratio": 2, "temporal_compression_start_level": 1}, VIDEO),
    "AutoencoderOobleck": (
        {"encoder_hidden_size": 4, "downsampling_ratios": [2, 2], "channel_multiples": [1, 2], "decoder_channels": 4,
         "decoder_input_channels": 2, "audio_channels": 1}, AUDIO),
    "AutoencoderKLKVAEAudio": (
        {"encoder_dim": 4, "encoder_rates": [2, 2], "latent_dim": 8, "codebook_dim": 2, "decoder_dim": 8,
         "decoder_rates": [2, 2], "num_channels": 1, "attn_num_heads": 1}, AUDIO),
    "AutoencoderKLMiniMaxH3Audio": (
        {"encoder_dim": 4, "encoder_rates": (2, 2), "latent_dim": 8, "latent_channels": 2, "num_attention_heads": 1,
         "decoder_dim": 8, "decoder_rates": (2, 2), "decoder_kernel_sizes": (4, 4)}, AUDIO),
    "AutoencoderSAME": (
        {"audio_channels": 1, "patch_size": 4, "encoder_channels": 4, "encoder_c_mults": (1,), "encoder_strides": (2,),
         "encoder_transformer_depths": (1,), "latent_dim": 2, "dim_heads": 4, "ff_mult": 1}, AUDIO),
    "LongCatAudioDiTVae": ({"channels": 4, "c_mults": [1, 2], "strides": [2, 2], "latent_dim": 2,
                            "encoder_latent_dim": 4, "downsampling_ratio": 4}, AUDIO),
    "AutoencoderKLLTX2Audio": ({"base_channels": 16, "output_channels": 2, "ch_mult": (1, 1), "num_res_blocks": 1,
                                "latent_channels": 2, "mel_bins": 16}, (1, 2, 8, 16)),
    "MMAudioVAE": ({"mel_bins": 16, "latent_channels": 2, "hidden_channels": 8, "channel_multipliers": (1, 1),
                    "layers_per_block": 1, "n_fft": 64, "hop_length": 16}, (1, 64)),
    "Cosmos3AVAEAudioTokenizer": (
        {"enc_dim": 8, "enc_intermediate_dim": 8, "enc_num_layers": 1, "enc_num_blocks": 1, "enc_latent_dim": 2,
         "enc_c_mults": (1,), "enc_strides": (2,), "dec_dim": 8, "dec_c_mults": (1,), "dec_strides": (2,),
         "vocoder_input_dim": 2}, (1, 2, 256)),
}  # fmt: skip
