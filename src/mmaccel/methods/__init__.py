"""mmaccel.methods"""
