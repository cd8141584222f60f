"""fused_lstm"""
