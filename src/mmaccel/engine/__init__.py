"""mmaccel.engine"""
